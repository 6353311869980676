//! The fuzz targets' properties as a plain test, for CI: every seed in
//! `fuzz/corpus/<target>/` (and every regression input in `fuzz/regressions/<target>/`),
//! then a fixed number of deterministic mutations of them, per target. No coverage
//! guidance and no sanitizers (that is `tests/fuzz.sh`); what this buys is that every
//! property runs on every CI run in a few seconds, and that a crash the fuzzer found
//! and that was saved under `fuzz/regressions/` stays fixed.
//!
//! `AIRLOCK_FUZZ_SMOKE_CASES` sets the mutations per target (default 300).
//!
//! The seed corpus is written by the ignored test `write_seed_corpus`:
//!
//!     cargo run -p airlock-bundler -- create examples/demo/bundle.yaml -o /tmp/x.airlock \
//!         --key examples/demo/keys/demo.key
//!     AIRLOCK_DEMO_BUNDLE=/tmp/x.airlock cargo test -p airlock-fuzz-checks --test smoke \
//!         -- --ignored write_seed_corpus

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airlock_fuzz_checks::bytes::piece;
use airlock_fuzz_checks::formats::{signed_bundle_input, tar_entry};
use airlock_fuzz_checks::sources::{tgz, tree_input};
use airlock_fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/").to_path_buf()
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("read seed"))).collect()
}

/// xorshift64*: deterministic, so a failing case is reproducible from its number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to eight of libFuzzer's simplest mutations.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if at < v.len() => v[at] ^= 1 << rng.below(8),
            1 if at < v.len() => v[at] = rng.next() as u8,
            2 => v.insert(at, rng.next() as u8),
            3 if at < v.len() => {
                let n = rng.below(16).min(v.len() - at);
                v.drain(at..at + n);
            }
            4 if at < v.len() => {
                let vals = [0u8, 0xff, 0x7f, 0x80, b'\n', b'"', b'.', b'/'];
                v[at] = vals[rng.below(vals.len())];
            }
            5 if !other.is_empty() => {
                // Splice a piece of another seed in.
                let from = rng.below(other.len());
                let n = rng.below(64).min(other.len() - from);
                v.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

#[test]
fn every_target_holds_on_its_seeds_regressions_and_mutations() {
    let cases: usize = std::env::var("AIRLOCK_FUZZ_SMOKE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    for (name, check) in TARGETS {
        let t0 = Instant::now();
        let seeds = files_in(&fuzz_dir().join("corpus").join(name));
        assert!(!seeds.is_empty(), "{name}: no seed corpus in fuzz/corpus/{name}");
        let regressions = files_in(&fuzz_dir().join("regressions").join(name));
        for (path, bytes) in seeds.iter().chain(&regressions) {
            eprintln!("{name}: {}", path.display());
            check(bytes);
        }
        let mut rng = Rng(0x5eed_0000 ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 8);
        for i in 0..cases {
            let (_, seed) = &seeds[rng.below(seeds.len())];
            let (_, other) = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed, other);
            let r = std::panic::catch_unwind(|| check(&input));
            if r.is_err() {
                let out = std::env::temp_dir().join(format!("airlock-fuzz-smoke-{name}-{i}"));
                std::fs::write(&out, &input).expect("save failing input");
                panic!("{name}: mutation {i} failed; input saved to {}", out.display());
            }
        }
        let took = t0.elapsed();
        eprintln!("{name}: {} seeds, {} regressions, {cases} mutations in {took:.1?}", seeds.len(), regressions.len());
        assert!(took < Duration::from_secs(120), "{name} is too slow for a smoke run");
    }
}

/// Writes `fuzz/corpus/` from the repository's demo material (see the module docs).
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let repo = fuzz_dir().parent().expect("repo").to_path_buf();
    let demo = repo.join("examples/demo");
    let bundle_path = std::env::var("AIRLOCK_DEMO_BUNDLE").expect("AIRLOCK_DEMO_BUNDLE=path of the demo bundle");
    let bundle = std::fs::read(&bundle_path).expect("demo bundle");
    let tar = zstd::decode_all(&bundle[..]).expect("demo bundle decodes");
    // The demo bundle's tar: manifest, signature, then every entry.
    let mut entries = tar::Archive::new(&tar[..]);
    let mut list = Vec::new();
    for e in entries.entries().expect("tar").raw(true) {
        let mut e = e.expect("entry");
        let path = e.path().expect("path").to_string_lossy().into_owned();
        let start = e.raw_file_position();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).expect("data");
        list.push((path, start, data));
    }
    let manifest = list[0].2.clone();
    let signature = list[1].2.clone();
    let tail_start = (list[2].1 - 512) as usize;
    let tail = &tar[tail_start..];
    let read = |p: &str| std::fs::read(demo.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let demo_pub = read("keys/demo.pub");
    let demo_key = read("keys/demo.key");

    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("write seed");
    };

    // manifest
    write("manifest", "demo-manifest.json", &manifest);

    // minisign_parse: public key, signature, secret key, message.
    let mut v = Vec::new();
    piece(&mut v, &demo_pub);
    piece(&mut v, &signature);
    piece(&mut v, &demo_key);
    v.extend_from_slice(&manifest[..manifest.len().min(2000)]);
    write("minisign_parse", "demo-key-and-manifest-signature", &v);
    let (stock_pub, stock_sig, stock_legacy) = stock_vectors();
    let mut v = Vec::new();
    piece(&mut v, stock_pub.as_bytes());
    piece(&mut v, stock_legacy.as_bytes());
    piece(&mut v, b"");
    v.extend_from_slice(b"hello airlock\n");
    write("minisign_parse", "stock-legacy", &v);

    // minisign_diff: mode 0 with real files, mode 1 seeds with and without mutations.
    for (name, pk, sig, msg) in [
        ("stock", stock_pub.as_bytes(), stock_sig.as_bytes(), &b"hello airlock\n"[..]),
        ("stock-legacy", stock_pub.as_bytes(), stock_legacy.as_bytes(), &b"hello airlock\n"[..]),
        ("demo-manifest", &demo_pub[..], &signature[..], &manifest[..manifest.len().min(4000)]),
    ] {
        let mut v = vec![0u8];
        piece(&mut v, pk);
        piece(&mut v, sig);
        v.extend_from_slice(msg);
        write("minisign_diff", name, &v);
    }
    for (name, flags, tc, mutations) in [
        ("signed-ours", 0u8, "timestamp:1700000000\tfile:x.airlock", &[][..]),
        ("signed-theirs", 1, "timestamp:1700000000", &[][..]),
        ("signed-ours-mutated-sig", 0, "fuzz", &[1u8, 30, 0, 4][..]),
        ("signed-ours-mutated-comment", 0, "a trusted comment", &[1u8, 160, 0, 1][..]),
        ("signed-ours-trailing-space", 0, "comment ", &[][..]),
    ] {
        let mut v = vec![1u8];
        v.extend_from_slice(&[7u8; 32]);
        v.extend_from_slice(b"keyid-01");
        v.push(flags);
        piece(&mut v, tc.as_bytes());
        piece(&mut v, b"the message\n");
        v.extend_from_slice(mutations);
        write("minisign_diff", name, &v);
    }

    // bundle: the demo bundle as is (raw mode), and its manifest and tar re-signed.
    let mut raw = vec![0u8];
    raw.extend_from_slice(&bundle);
    write("bundle", "demo-raw", &raw);
    write("bundle", "demo-signed", &signed_bundle_input(&manifest, tail));
    // A small one: one entry.
    let content = b"hello\n";
    let small_manifest = serde_json::json!({
        "format": "airlock.bundle/v1", "name": "fuzz", "version": "1.0.0",
        "created": "2024-01-01T00:00:00Z", "components": [], "images": [], "charts": [],
        "files": [], "profiles": [],
        "entries": [{"path": "files/hello.txt", "size": content.len(),
                     "sha256": format!("sha256:{}", airlock_format::Sha256Digest::of(content).hex())}],
    });
    let small_manifest = serde_json::to_vec_pretty(&small_manifest).unwrap();
    let mut small_tail = Vec::new();
    tar_entry(&mut small_tail, "files/hello.txt", content);
    small_tail.extend_from_slice(&[0; 1024]);
    let mut small = signed_bundle_input(&small_manifest, &small_tail);
    write("bundle", "small-signed", &small);
    small[0] = 3; // the same in 64 KiB frames
    write("bundle", "small-signed-big-frames", &small);

    // answers
    write("answers", "demo-answers.yaml", &read("answers.yaml"));

    // oci: archive (mode 0), docker archive (1), layout directory (2).
    let layout = demo.join("images/layout");
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in walk(&layout) {
        let rel = e.strip_prefix(&layout).unwrap().to_string_lossy().into_owned();
        files.push((rel, std::fs::read(&e).unwrap()));
    }
    files.sort();
    let small: Vec<(&str, &[u8])> =
        files.iter().filter(|(_, d)| d.len() < 16 << 10).map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let mut v = vec![2u8];
    v.extend_from_slice(&tree_input(&small));
    write("oci", "demo-layout", &v);
    let mut t = tar::Builder::new(Vec::new());
    for (n, d) in &small {
        let mut h = tar::Header::new_gnu();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        t.append_data(&mut h, n, *d).unwrap();
    }
    let mut v = vec![0u8];
    v.extend_from_slice(&t.into_inner().unwrap());
    write("oci", "demo-layout-archive", &v);
    let mut v = vec![1u8];
    v.extend_from_slice(&read("images/tools.docker.tar"));
    write("oci", "demo-docker-archive", &v);
    write(
        "oci",
        "index-json-only",
        &[&[2u8][..], &tree_input(&[("index.json", &read("images/layout/index.json"))])].concat(),
    );

    // helm_index
    let mut v = Vec::new();
    piece(&mut v, b"notes");
    piece(&mut v, b"0.1.0");
    v.extend_from_slice(
        b"apiVersion: v1\nentries:\n  notes:\n    - name: notes\n      version: 0.1.0\n      digest: \
          0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n      urls:\n        - notes-0.1.0.tgz\n    \
          - name: notes\n      version: 0.0.9\n      urls: [https://other.example.com/notes-0.0.9.tgz]\n  web:\n    \
          - {name: web, version: 1.2.3, urls: [./web-1.2.3.tgz]}\ngenerated: \"2024-01-01T00:00:00Z\"\n",
    );
    write("helm_index", "index.yaml", &v);

    // chart: Chart.yaml (0), the .tgz (1), a chart directory (2).
    let chart_yaml = read("charts/hello/Chart.yaml");
    write("chart", "hello-chart-yaml", &[&[0u8][..], &chart_yaml].concat());
    write("chart", "notes-tgz", &[&[1u8][..], &read("charts/notes-0.1.0.tgz")].concat());
    let hello = demo.join("charts/hello");
    let mut hf: Vec<(String, Vec<u8>)> = walk(&hello)
        .into_iter()
        .map(|p| (p.strip_prefix(&hello).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    hf.sort();
    let hf: Vec<(&str, &[u8])> = hf.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    write("chart", "hello-dir", &[&[2u8][..], &tree_input(&hf)].concat());
    write("chart", "hello-tgz", &[&[1u8][..], &tgz(&hf.iter().map(|(n, d)| (*n, *d)).collect::<Vec<_>>())].concat());

    // redact: [file][len][40 secret bytes] text with @@ (the secret) and @B (base64).
    let redact_seeds: [(&str, u8, &str); 9] = [
        ("secret-block.yaml", 0, "apiVersion: v1\nkind: Secret # a comment\nmetadata:\n  name: s\ndata:\n  password: \"@B\"\nstringData:\n  token: @@\n---\nkind: ConfigMap\ndata:\n  enabled: \"true\"\n"),
        ("secret-flow.yaml", 0, "{apiVersion: v1, kind: Secret, metadata: {name: s}, stringData: {pw: @@}}\n"),
        ("secret.json", 1, "{\"kind\":\"Secret\",\"data\":{\"a\":\"@B\"},\"metadata\":{\"annotations\":{\"kubectl.kubernetes.io/last-applied-configuration\":\"{\\\"stringData\\\":{\\\"x\\\":\\\"@@\\\"}}\"}}}"),
        ("helmchart.yaml", 0, "kind: HelmChart\nspec:\n  valuesContent: |-\n    auth:\n      adminPassword: @@\n    replicas: 3\n"),
        ("env.env", 2, "DB_PASSWORD=@@\nAPI_TOKEN='@@'\nLOG_LEVEL=debug\nDATABASE_URL=postgres://app:@@x@db:5432/app\n"),
        ("log.log", 3, "time=1 msg=\"connecting\" url=https://admin:@@@example.com/ password=@@ Authorization: Bearer @@\nK10@@::server:@@\n"),
        ("kubeconfig", 4, "apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    token: @@\n    client-key-data: @B\n"),
        ("docker-config.json", 1, "{\"auths\":{\"registry.example.com\":{\"auth\":\"@B\",\"password\":\"@@\"}}}"),
        ("env-list.yaml", 0, "spec:\n  containers:\n  - env:\n    - name: KEYCLOAK_ADMIN_PASSWORD\n      value: @@\n    - name: MODE\n      value: prod\n"),
    ];
    for (name, file, text) in redact_seeds {
        let mut v = vec![file, 12];
        v.extend_from_slice(&(0u8..40).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect::<Vec<_>>());
        v.extend_from_slice(text.as_bytes());
        write("redact", name, &v);
    }
    let mut v = vec![3u8, 20];
    v.extend_from_slice(&[9u8; 40]);
    v.extend_from_slice(
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA@@\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    write("redact", "private-key.log", &v);

    // rooted: ops [op][piece a][piece b?] (see host::rooted).
    let op = |v: &mut Vec<u8>, op: u8, a: &str, b: Option<&str>| {
        v.push(op);
        piece(v, a.as_bytes());
        if let Some(b) = b {
            piece(v, b.as_bytes());
        }
    };
    let mut v = Vec::new();
    op(&mut v, 1, "etc/out", Some("$OUT"));
    op(&mut v, 4, "/etc/out/canary", None);
    op(&mut v, 3, "/etc/out/dir/canary", None);
    op(&mut v, 5, "/etc/out/new", None);
    op(&mut v, 7, "/etc/out", None);
    write("rooted", "absolute-link-out", &v);
    let mut v = Vec::new();
    op(&mut v, 0, "var/lib", None);
    op(&mut v, 1, "var/lib/airlock", Some("../../../outside"));
    op(&mut v, 4, "/var/lib/airlock/staging/x", None);
    op(&mut v, 1, "var/run", Some("../run"));
    op(&mut v, 5, "/var/run/airlock", None);
    op(&mut v, 3, "/var/run/airlock", None);
    write("rooted", "relative-links", &v);
    let mut v = Vec::new();
    op(&mut v, 2, "etc/hostname", None);
    op(&mut v, 1, "lib", Some("usr/lib"));
    op(&mut v, 0, "usr", None);
    op(&mut v, 4, "/lib/x/y", None);
    op(&mut v, 6, "/etc/l", Some("/etc/hostname"));
    op(&mut v, 4, "/etc/l", None);
    op(&mut v, 1, "loop", Some("loop"));
    op(&mut v, 3, "/loop/x", None);
    op(&mut v, 1, "missing-link", Some("nothing/here"));
    op(&mut v, 4, "/missing-link/f", None);
    write("rooted", "links-inside", &v);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Test vectors made by stock minisign 0.11 (the same as `airlock_format::minisign`'s).
fn stock_vectors() -> (&'static str, &'static str, &'static str) {
    (
        "untrusted comment: minisign public key 254FABA1A97C610E\nRWQOYXypoatPJTGsYczUtHICn8ha+W021xqvrhcOAKNC+B4iv4zr6NrT\n",
        "untrusted comment: signature from minisign secret key\nRUQOYXypoatPJQ1NLwBKKJy843I76ulXL9dENSKrMZUefiwL1Ulba6Aq/MOWDAhm9piuhHs9E6nSFGDKCV8yq/hdlWiFSHL03QM=\ntrusted comment: airlock test vector\n4QT+WUKEGM61wYyzJ2WNfkQeDr2c2Qb7GKkM0c38Phmgzv5xrRDZNZEEo2QtMC6QkYk7gK6ORHg7bgjLUgURBg==\n",
        "untrusted comment: signature from minisign secret key\nRWQOYXypoatPJX2TPkT/dQcAPfEt8xwXdNQEsHzkE8ZMItErTVpHrO3Uyvr5iTJowhd1mo2TTBy2ef56+Tt1EambG5NtK8bufwM=\ntrusted comment: airlock legacy vector\nBzpmMGhqOrFSdSCw33YgRPgbVIGEBnpbVaP5oP35utgnprTWsojYmwjdhi0kERzGNhchqvVMEDVq4Xxhy5IzBg==\n",
    )
}
