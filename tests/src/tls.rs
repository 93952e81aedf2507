//! A test PKI (a CA the test makes, server certificates it signs, and a
//! second CA nobody trusts) and nginx terminating TLS in front of a service.
//!
//! nginx is Debian's `nginx-light` (`.ci/run` installs it); without it the
//! tests that need it skip, or fail under `LATTICE_REQUIRE_SERVICES=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of a certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything a TLS test needs, written to a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA clients are told to trust.
    pub ca: PathBuf,
    /// For `127.0.0.1` and `localhost`, valid now, signed by `ca`.
    pub server: CertFiles,
    /// Same names and CA, expired a year ago.
    pub expired: CertFiles,
    /// Signed by `ca` but only for `wrong.example`.
    pub wrong_name: CertFiles,
    /// For `127.0.0.1`, signed by a CA nobody trusts.
    pub untrusted: CertFiles,
}

impl TestPki {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (ca_pem, ca) = make_ca("Lattice test CA")?;
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem)?;
        let (_, other_ca) = make_ca("Nobody's CA")?;
        let local = ["127.0.0.1", "localhost"];
        let server = leaf(dir.path(), "server", &local, &ca, false)?;
        let expired = leaf(dir.path(), "expired", &local, &ca, true)?;
        let wrong_name = leaf(dir.path(), "wrong-name", &["wrong.example"], &ca, false)?;
        let untrusted = leaf(dir.path(), "untrusted", &local, &other_ca, false)?;
        Ok(Self {
            dir,
            ca: ca_path,
            server,
            expired,
            wrong_name,
            untrusted,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn make_ca(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    ca: &Issuer<'static, KeyPair>,
    expired: bool,
) -> anyhow::Result<CertFiles> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, ca)?;
    let files = CertFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}-key.pem")),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    Ok(files)
}

/// Copies a pair over the files a service serves (the key first, then the
/// certificate, each renamed into place as a renewal tool would).
pub fn install_pair(from: &CertFiles, to: &CertFiles) -> anyhow::Result<()> {
    for (src, dst) in [(&from.key, &to.key), (&from.cert, &to.cert)] {
        let tmp = dst.with_extension("tmp");
        std::fs::copy(src, &tmp)?;
        std::fs::rename(&tmp, dst)?;
    }
    Ok(())
}

/// nginx terminating TLS on a loopback port and proxying to a plain-HTTP
/// service, WebSocket upgrades included. Stops on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// The nginx binary, or why there is none.
pub fn nginx_bin() -> Result<PathBuf, String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "nginx is not installed (apt-get install nginx-light; .ci/run does)".into())
}

impl Nginx {
    /// Serves `https://127.0.0.1:PORT` with `cert`, proxying to `upstream`
    /// (`127.0.0.1:PORT` of a plain-HTTP service).
    pub fn start(bin: &Path, port: u16, cert: &CertFiles, upstream: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), port, cert, upstream))?;
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                let log = std::fs::read_to_string(nginx._dir.path().join("stderr.log"))
                    .unwrap_or_default();
                bail!("nginx exited with {status}: {log}");
            }
            if Instant::now() > deadline {
                bail!("nginx is not listening on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration docs/operations.md recommends, on test ports.
fn nginx_conf(dir: &Path, port: u16, cert: &CertFiles, upstream: &str) -> String {
    let dir = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        client_max_body_size 20m;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"#,
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}
