//! The platform services installed on top of the distribution, each as a chart's
//! values plus the manifests it needs first.

pub mod app;
