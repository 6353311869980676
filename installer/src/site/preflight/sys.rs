//! The few facts only the running kernel can give: read-only system calls.
//!
//! Everything else the collector reads from files under a root, so fixture trees can
//! stand in for a host. These calls change nothing, which is why they live here and
//! not behind the host seam that carries every change to the host.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::libc;

use super::facts::{InterfaceAddress, KernelClock, ResolverAnswer};

/// `uname -r` and `uname -m`.
pub(crate) fn uname() -> Option<(String, String)> {
    let u = nix::sys::utsname::uname().ok()?;
    Some((u.release().to_string_lossy().into_owned(), u.machine().to_string_lossy().into_owned()))
}

pub(crate) fn hostname() -> Option<String> {
    nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned())
}

/// Every IPv4 address on every interface, from getifaddrs(3).
pub(crate) fn ipv4_addresses() -> Result<Vec<InterfaceAddress>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("getifaddrs: {}", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned and has not been freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says what it is.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let address = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
                out.push(InterfaceAddress { interface: Some(name), address });
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The kernel clock's synchronisation state, read with adjtimex(2) in read-only mode
/// (`modes = 0`). adjtimex rather than ntp_adjtime because musl, which a static
/// installer build uses, has only adjtimex.
pub(crate) fn kernel_clock() -> Option<KernelClock> {
    // SAFETY: timex is plain data; all-zero is a valid value and modes = 0 reads only.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return None;
    }
    let synchronized = state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    Some(KernelClock { synchronized, max_error_us: tx.maxerror as i64, est_error_us: tx.esterror as i64 })
}

/// (total, available) bytes of the filesystem holding `path`.
pub(crate) fn filesystem_space(path: &Path) -> Result<(u64, u64), String> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| format!("statvfs {}: {e}", path.display()))?;
    let frag = st.fragment_size() as u64;
    Ok((st.blocks() as u64 * frag, st.blocks_available() as u64 * frag))
}

/// Asks the system resolver (getaddrinfo, so nsswitch order applies) for `name`, giving
/// up after `timeout`: on an air gap a configured but unreachable DNS server would
/// otherwise stall the preflight for the resolver's full retry schedule.
pub(crate) fn resolve(name: &str, timeout: Duration) -> ResolverAnswer {
    let (tx, rx) = mpsc::channel();
    let owned = name.to_string();
    // The thread is detached on timeout; getaddrinfo cannot be cancelled and ends on its own.
    std::thread::spawn(move || {
        let answer = (owned.as_str(), 0u16).to_socket_addrs().map(|it| it.map(|a| a.ip()).collect::<Vec<IpAddr>>());
        let _ = tx.send(answer);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(mut addresses)) => {
            addresses.sort();
            addresses.dedup();
            ResolverAnswer { addresses, error: None }
        }
        Ok(Err(e)) => ResolverAnswer { addresses: Vec::new(), error: Some(e.to_string()) },
        Err(_) => ResolverAnswer {
            addresses: Vec::new(),
            error: Some(format!("the resolver did not answer within {} s", timeout.as_secs_f32())),
        },
    }
}
