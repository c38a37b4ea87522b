//! TLS for the extender port (rustls on the ring provider): a server
//! certificate and key in PEM, and optionally a CA whose client
//! certificates are required (the scheduler's `tlsConfig.certData/keyData`).
//!
//! The server certificate and key are re-read when their files change (a
//! mounted Secret updated by cert-manager, or a rotation script): at most
//! once per [`RECHECK`], on a TLS handshake. A pair that fails to load or
//! does not match keeps the previous one in service and is logged, so a
//! half-written rotation never takes the extender down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// How often a handshake may look at the certificate files again.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Where the TLS material lives.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM; PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to; none: no
    /// client authentication.
    pub client_ca: Option<PathBuf>,
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

/// Modification times of the certificate and key files (`None` if either
/// cannot be read).
fn stamp(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(cert)?, modified(key)?))
}

/// Loads the certificate chain and key, checking that they belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = certs(cert)?;
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    CertifiedKey::from_der(chain, der, provider)
        .map(Arc::new)
        .context("the server certificate and key do not form a valid pair")
}

/// The server certificate, reloaded when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
    current: Arc<CertifiedKey>,
}

impl Reloading {
    fn new(files: &TlsFiles, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let stamp = stamp(&files.cert, &files.key);
        let current = certified_key(&files.cert, &files.key, &provider)?;
        Ok(Self {
            cert: files.cert.clone(),
            key: files.key.clone(),
            provider,
            state: Mutex::new(Loaded {
                stamp,
                checked: Instant::now(),
                current,
            }),
        })
    }

    /// The certificate to serve, reloading it first if the files changed
    /// and the last look is older than `recheck`.
    fn current(&self, recheck: Duration) -> Arc<CertifiedKey> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.checked.elapsed() >= recheck {
            st.checked = Instant::now();
            let stamp = stamp(&self.cert, &self.key);
            if stamp != st.stamp {
                match certified_key(&self.cert, &self.key, &self.provider) {
                    Ok(k) => {
                        st.current = k;
                        st.stamp = stamp;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => tracing::warn!(
                        cert = %self.cert.display(),
                        error = %format!("{e:#}"),
                        "TLS certificate changed but does not load; the previous one stays in service"
                    ),
                }
            }
        }
        Arc::clone(&st.current)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(RECHECK))
    }
}

/// Builds the server configuration (HTTP/1.1 only, as the scheduler speaks).
///
/// # Errors
/// Unreadable or malformed files, or a key that does not match.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = Reloading::new(files, provider.clone())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("adding a CA certificate from {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // HTTP/2 first: kube-scheduler's extender client (Go's transport with
    // HTTP/2 configured) then sends every verb of every pod over one
    // connection. Over HTTP/1.1 it keeps at most 2 idle connections, so each
    // bind beyond two in flight opens, and pays a TLS handshake for, a
    // connection of its own. Clients without ALPN get HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key, ck.cert.der().to_vec())
    }

    #[test]
    fn a_rotated_certificate_is_served_and_a_broken_rotation_keeps_the_old_one() {
        let dir = std::env::temp_dir().join(format!("spillway-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key, first) = write_pair(&dir, "first.example");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        };
        let r = Reloading::new(&files, Arc::new(rustls::crypto::ring::default_provider())).unwrap();
        let served = |r: &Reloading| r.current(Duration::ZERO).cert[0].to_vec();
        assert_eq!(served(&r), first);
        // Rotated in place: the next handshake serves the new pair. (The
        // stamp is forced stale: file times can be coarser than the test.)
        let (_, _, second) = write_pair(&dir, "second.example");
        r.state.lock().unwrap().stamp = None;
        assert_eq!(served(&r), second);
        // Half-written rotation (certificate without its key): the working
        // pair stays in service.
        let third = rcgen::generate_simple_self_signed(vec!["third.example".to_owned()]).unwrap();
        std::fs::write(&cert, third.cert.pem()).unwrap();
        r.state.lock().unwrap().stamp = None;
        assert_eq!(served(&r), second);
        // Within the recheck interval the files are not looked at.
        std::fs::write(&key, third.signing_key.serialize_pem()).unwrap();
        r.state.lock().unwrap().stamp = None;
        assert_eq!(
            r.current(Duration::from_secs(3600)).cert[0].to_vec(),
            second
        );
        assert_eq!(served(&r), third.cert.der().to_vec());
        std::fs::remove_dir_all(&dir).ok();
    }
}
