//! A private, real OpenLDAP `slapd` for tests (as in `shared/lab/04-openldap.sh`): its
//! own cn=config, database, TLS certificates (made with `openssl`) and free ports on
//! 127.0.0.1, all in a temp dir; killed by its PID when dropped.
//!
//! Two directories can be loaded: an OpenLDAP-style one ([`Directory::OpenLdap`]:
//! `inetOrgPerson` users, `groupOfNames` groups) and an Active-Directory-style one
//! ([`Directory::ActiveDirectory`]: `user` entries with `sAMAccountName` and
//! `objectGUID`, groups of class `group`, and a referral among the users). slapd has no AD schema, so the latter loads
//! a small schema ([`AD_SCHEMA_LDIF`]) that defines those names with AD's own OIDs.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::require_tool;

/// Which kind of directory to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directory {
    /// `dc=example,dc=org`: users alice, bob, carol (`inetOrgPerson`) in
    /// `ou=people`; groups `admins` (alice, bob) and `staff` (carol) in `ou=groups`.
    OpenLdap,
    /// `dc=corp,dc=example`: users alice, bob (`user`, `sAMAccountName`, passwords
    /// `alice-pw`, `bob-pw`) in
    /// `cn=Users`; group `platform-admins` (alice) in `ou=Groups`.
    ActiveDirectory,
}

/// The read-only service accounts tests bind with, and their passwords.
pub const OPENLDAP_BIND_DN: &str = "cn=reader,ou=services,dc=example,dc=org";
pub const OPENLDAP_BIND_PW: &str = "reader-pw";
pub const OPENLDAP_USERS_DN: &str = "ou=people,dc=example,dc=org";
pub const OPENLDAP_GROUPS_DN: &str = "ou=groups,dc=example,dc=org";
pub const AD_BIND_DN: &str = "cn=svc-keycloak,ou=Service Accounts,dc=corp,dc=example";
pub const AD_BIND_PW: &str = "svc-pw";
pub const AD_USERS_DN: &str = "cn=Users,dc=corp,dc=example";
pub const AD_GROUPS_DN: &str = "ou=Groups,dc=corp,dc=example";

/// The AD attribute types and classes the AD preset relies on, with AD's OIDs, as a
/// cn=config schema entry (after core, cosine and inetorgperson).
pub const AD_SCHEMA_LDIF: &str = "\
dn: cn=adlike,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: adlike
olcAttributeTypes: ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.2 NAME 'objectGUID' EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
olcAttributeTypes: ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcObjectClasses: ( 1.2.840.113556.1.5.9 NAME 'user' SUP organizationalPerson STRUCTURAL MAY ( sAMAccountName $ objectGUID $ userPrincipalName $ mail $ givenName $ displayName ) )
olcObjectClasses: ( 1.2.840.113556.1.5.8 NAME 'group' SUP top STRUCTURAL MUST cn MAY ( member $ sAMAccountName $ objectGUID $ description ) )
";

/// A running slapd. Listens on `ldap://127.0.0.1:ldap_port` (StartTLS too) and
/// `ldaps://127.0.0.1:ldaps_port`, and on `ldaps://127.0.0.2:ldaps_port`, an address
/// its certificate does not name (for host name mismatch tests).
pub struct Slapd {
    dir: tempfile::TempDir,
    child: Child,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    pub directory: Directory,
}

impl Slapd {
    /// Starts one. `None` (skip) or panic (`AIRLOCK_REQUIRE_TOOLS=1`) when slapd,
    /// slapadd or openssl is missing; panics when it does not come up.
    pub fn start(directory: Directory) -> Option<Slapd> {
        let slapd = require_tool("slapd")?;
        let slapadd = require_tool("slapadd")?;
        let openssl = require_tool("openssl")?;
        Some(Self::start_with(directory, &slapd, &slapadd, &openssl).expect("start a private slapd"))
    }

    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The CA that signed the server certificate (SAN `DNS:localhost`, `IP:127.0.0.1`).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// Another CA, which signed nothing slapd presents.
    pub fn other_ca_pem(&self) -> PathBuf {
        self.dir.path().join("tls/other-ca.pem")
    }

    /// The temp dir (config, data, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// slapd's output so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn start_with(directory: Directory, slapd: &Path, slapadd: &Path, openssl: &Path) -> Result<Slapd> {
        let dir = tempfile::Builder::new().prefix("airlock-slapd.").tempdir()?;
        let d = dir.path().to_path_buf();
        for sub in ["slapd.d", "db", "run", "tls"] {
            fs::create_dir_all(d.join(sub))?;
        }
        make_pki(openssl, &d.join("tls"))?;
        let (suffix, data) = match directory {
            Directory::OpenLdap => ("dc=example,dc=org", openldap_data()),
            Directory::ActiveDirectory => ("dc=corp,dc=example", ad_data()),
        };
        let schema = if directory == Directory::ActiveDirectory { AD_SCHEMA_LDIF } else { "" };
        fs::write(d.join("config.ldif"), config_ldif(&d, suffix, schema))?;
        fs::write(d.join("data.ldif"), data)?;
        run(Command::new(slapadd).arg("-n0").arg("-F").arg(d.join("slapd.d")).arg("-l").arg(d.join("config.ldif")))?;
        run(Command::new(slapadd).arg("-n1").arg("-F").arg(d.join("slapd.d")).arg("-l").arg(d.join("data.ldif")))?;

        // Free ports are picked by binding port 0; another process may take one before
        // slapd binds it, so a start that fails early is retried with new ports.
        let mut last_log = String::new();
        for _ in 0..3 {
            let (ldap_port, ldaps_port) = free_ports()?;
            let log = fs::File::create(d.join("slapd.log"))?;
            let urls = format!(
                "ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/ ldaps://127.0.0.2:{ldaps_port}/"
            );
            // -d 0: stays in the foreground, so the PID is ours to stop.
            let child = Command::new(slapd)
                .args(["-d", "0", "-F"])
                .arg(d.join("slapd.d"))
                .args(["-h", &urls])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawn {}", slapd.display()))?;
            let mut child = child;
            let log_now = || fs::read_to_string(d.join("slapd.log")).unwrap_or_default();
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Some(status) = child.try_wait()? {
                    last_log = format!("slapd exited early ({status}); log:\n{}", log_now());
                    break;
                }
                let up = |p: u16| TcpStream::connect(("127.0.0.1", p)).is_ok();
                if up(ldap_port) && up(ldaps_port) {
                    return Ok(Slapd { dir, child, ldap_port, ldaps_port, directory });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("slapd did not listen on {ldap_port}/{ldaps_port} within 15 s; log:\n{}", log_now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bail!("{last_log}")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        // SIGTERM by PID, up to 5 s to exit, then SIGKILL.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stdin(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A CA, a server certificate it signs (SAN localhost and 127.0.0.1, serverAuth), and
/// an unrelated second CA.
pub(crate) fn make_pki(openssl: &Path, t: &Path) -> Result<()> {
    let ca = |name: &str, cn: &str| -> Result<()> {
        run(Command::new(openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .arg("-keyout")
            .arg(t.join(format!("{name}.key")))
            .arg("-out")
            .arg(t.join(format!("{name}.pem")))
            .args(["-subj", &format!("/CN={cn}")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]))
    };
    ca("ca", "Airlock Test LDAP CA")?;
    ca("other-ca", "Airlock Unrelated CA")?;
    run(Command::new(openssl)
        .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(t.join("server.key"))
        .arg("-out")
        .arg(t.join("server.csr")))?;
    fs::write(
        t.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n",
    )?;
    run(Command::new(openssl)
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(t.join("server.csr"))
        .arg("-CA")
        .arg(t.join("ca.pem"))
        .arg("-CAkey")
        .arg(t.join("ca.key"))
        .arg("-CAcreateserial")
        .arg("-out")
        .arg(t.join("server.pem"))
        .arg("-extfile")
        .arg(t.join("ext.cnf")))
}

fn config_ldif(d: &Path, suffix: &str, extra_schema: &str) -> String {
    let p = |s: &str| d.join(s).display().to_string();
    format!(
        "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {pid}\nolcArgsFile: {args}\nolcLogLevel: none\n\
         olcTLSCACertificateFile: {ca}\nolcTLSCertificateFile: {cert}\nolcTLSCertificateKeyFile: {key}\n\n\
         dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\nolcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
         dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
         include: file:///etc/ldap/schema/core.ldif\n\
         include: file:///etc/ldap/schema/cosine.ldif\n\
         include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
         {extra_schema}\n\
         dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcFrontendConfig\nolcDatabase: {{-1}}frontend\nolcSizeLimit: 500\n\n\
         dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\nolcAccess: {{0}}to * by * none\n\n\
         dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\n\
         olcDbDirectory: {db}\nolcSuffix: {suffix}\nolcDbMaxSize: 104857600\nolcDbIndex: objectClass eq\n\
         olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none\n\
         olcAccess: {{1}}to * by users read by * none\n",
        pid = p("run/slapd.pid"),
        args = p("run/slapd.args"),
        ca = p("tls/ca.pem"),
        cert = p("tls/server.pem"),
        key = p("tls/server.key"),
        db = p("db"),
    )
}

fn openldap_data() -> String {
    let b = "dc=example,dc=org";
    let mut s = format!(
        "dn: {b}\nobjectClass: dcObject\nobjectClass: organization\no: Example Org\ndc: example\n\n\
         dn: ou=people,{b}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{b}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=services,{b}\nobjectClass: organizationalUnit\nou: services\n\n\
         dn: {OPENLDAP_BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: {OPENLDAP_BIND_PW}\n\n"
    );
    for u in ["alice", "bob", "carol"] {
        let cap = format!("{}{}", u[..1].to_uppercase(), &u[1..]);
        s.push_str(&format!(
            "dn: uid={u},ou=people,{b}\nobjectClass: inetOrgPerson\nuid: {u}\ncn: {cap} Example\nsn: Example\n\
             givenName: {cap}\nmail: {u}@example.org\nuserPassword: {u}-pw\n\n"
        ));
    }
    s.push_str(&format!(
        "dn: cn=admins,ou=groups,{b}\nobjectClass: groupOfNames\ncn: admins\nmember: uid=alice,ou=people,{b}\nmember: uid=bob,ou=people,{b}\n\n\
         dn: cn=staff,ou=groups,{b}\nobjectClass: groupOfNames\ncn: staff\nmember: uid=carol,ou=people,{b}\n"
    ));
    s
}

fn ad_data() -> String {
    let b = "dc=corp,dc=example";
    let mut s = format!(
        "dn: {b}\nobjectClass: dcObject\nobjectClass: organization\no: Corp\ndc: corp\n\n\
         dn: {AD_USERS_DN}\nobjectClass: organizationalRole\ncn: Users\n\n\
         dn: {AD_GROUPS_DN}\nobjectClass: organizationalUnit\nou: Groups\n\n\
         dn: ou=Service Accounts,{b}\nobjectClass: organizationalUnit\nou: Service Accounts\n\n\
         dn: {AD_BIND_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: svc-keycloak\nuserPassword: {AD_BIND_PW}\n\n"
    );
    // AD answers a subtree search with continuation references (to other partitions
    // or domains) next to the entries; a referral object below the users makes slapd
    // do the same.
    s.push_str(&format!(
        "dn: ou=Branch,{AD_USERS_DN}\nobjectClass: referral\nobjectClass: extensibleObject\nou: Branch\n\
         ref: ldap://branch.corp.example/ou=Branch,dc=corp,dc=example\n\n"
    ));
    // objectGUID is 16 raw bytes in AD; base64 in LDIF.
    for (i, (sam, name)) in [("alice", "Alice Example"), ("bob", "Bob Example")].iter().enumerate() {
        let guid = base64_16(i as u8 + 1);
        let given = name.split(' ').next().unwrap_or_default();
        s.push_str(&format!(
            "dn: cn={name},{AD_USERS_DN}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n\
             cn: {name}\nsn: Example\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@corp.example\nmail: {sam}@corp.example\n\
             givenName: {given}\nuserPassword: {sam}-pw\nobjectGUID:: {guid}\n\n"
        ));
    }
    s.push_str(&format!(
        "dn: cn=platform-admins,{AD_GROUPS_DN}\nobjectClass: top\nobjectClass: group\ncn: platform-admins\n\
         sAMAccountName: platform-admins\nmember: cn=Alice Example,{AD_USERS_DN}\n"
    ));
    s
}

/// Base64 of 16 bytes all `b`: a stand-in GUID.
fn base64_16(b: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([b; 16])
}
