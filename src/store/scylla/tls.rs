//! TLS to the ScyllaDB cluster: the rustls client configuration the driver's `rustls-023`
//! backend uses for every connection, built from PEM files named in `[scylla]`.
//!
//! - `tls_ca_file`: the CA bundle that signed the nodes' certificates (required with `tls`).
//! - `tls_cert_file` + `tls_key_file`: a client certificate, for clusters that require one
//!   (`require_client_auth: true` in scylla.yaml).
//! - `tls_verify_hostname`: the driver connects to nodes by IP address (it learns them from the
//!   cluster's peers table), so rustls checks that the certificate names that IP address. Node
//!   certificates often name hosts instead; with `false` the chain is still verified against the
//!   CA, only the name check is skipped.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ScyllaSettings;

/// Why the TLS configuration could not be built; names the setting and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("`{key}` {path}: {detail}")]
    File {
        key: &'static str,
        path: String,
        detail: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(String),
}

fn file_error(key: &'static str, path: &Path, detail: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        key,
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The rustls client configuration for the cluster, or `None` when `tls` is off.
pub fn client_config(
    settings: &ScyllaSettings,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsSetupError> {
    if !settings.tls {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca_path = settings
        .tls_ca_file
        .as_deref()
        .ok_or_else(|| TlsSetupError::Rustls("scylla.tls_ca_file is required".into()))?;
    let mut roots = RootCertStore::empty();
    for cert in certificates("scylla.tls_ca_file", ca_path)? {
        roots
            .add(cert)
            .map_err(|e| file_error("scylla.tls_ca_file", ca_path, e))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.tls_verify_hostname {
        webpki
    } else {
        Arc::new(ChainOnly(webpki))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates("scylla.tls_cert_file", cert_path)?;
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| file_error("scylla.tls_key_file", key_path, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| file_error("scylla.tls_key_file", key_path, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsSetupError::Rustls(
                "scylla.tls_cert_file and scylla.tls_key_file go together".into(),
            ));
        }
    };
    Ok(Some(Arc::new(config)))
}

/// Verifies the chain and signatures like rustls' WebPKI verifier, and accepts a certificate
/// that is valid in every way except that it does not name the address connected to.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    //! Real TLS handshakes on loopback with certificates made here (rcgen), through the same
    //! path the driver takes: a `tokio_rustls::TlsConnector` from our `ClientConfig`, and the
    //! node's IP address as the server name.

    use std::path::PathBuf;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use rustls::server::WebPkiClientVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn issuer(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
    }

    /// A certificate and key signed by `ca`, as PEM.
    fn leaf(
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, "node");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn server_config(
        cert_pem: &str,
        key_pem: &str,
        client_ca: Option<&CertifiedIssuer<'static, KeyPair>>,
    ) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der().clone()).expect("root");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        Arc::new(builder.with_single_cert(chain, key).expect("server config"))
    }

    /// Connects as the driver does and exchanges a few bytes; the error as text on failure.
    async fn round_trip(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.flush().await?;
            Ok::<_, std::io::Error>(())
        });
        let result = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(client);
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            if &buf != b"ping" {
                return Err("echo differs".into());
            }
            Ok(())
        }
        .await;
        server.abort();
        result
    }

    fn settings(ca_file: Option<PathBuf>) -> ScyllaSettings {
        ScyllaSettings {
            tls: true,
            tls_ca_file: ca_file,
            ..ScyllaSettings::default()
        }
    }

    #[test]
    fn off_means_no_tls() {
        let config = client_config(&ScyllaSettings::default()).expect("config");
        assert!(config.is_none());
    }

    #[tokio::test]
    async fn verifies_the_chain_and_the_address() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = issuer("cluster CA");
        let ca_file = write(dir.path(), "ca.pem", &ca.pem());
        let client = client_config(&settings(Some(ca_file.clone())))
            .expect("config")
            .expect("tls on");

        // A certificate for the address connected to: accepted.
        let (cert, key) = leaf(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        round_trip(client.clone(), server_config(&cert, &key, None))
            .await
            .expect("a certificate naming 127.0.0.1");

        // A certificate that names a host only: refused while names are checked...
        let (cert, key) = leaf(
            &ca,
            &["scylla-1.internal"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let err = round_trip(client.clone(), server_config(&cert, &key, None))
            .await
            .expect_err("name not checked");
        assert!(err.contains("not valid for name"), "{err}");
        // ...and accepted with tls_verify_hostname = false, the chain still verified.
        let lenient = client_config(&ScyllaSettings {
            tls_verify_hostname: false,
            ..settings(Some(ca_file.clone()))
        })
        .expect("config")
        .expect("tls on");
        round_trip(lenient.clone(), server_config(&cert, &key, None))
            .await
            .expect("chain only");

        // A certificate from another CA: refused in both modes.
        let stranger = issuer("someone else");
        let (cert, key) = leaf(
            &stranger,
            &["127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        for config in [client, lenient] {
            let err = round_trip(config, server_config(&cert, &key, None))
                .await
                .expect_err("unknown issuer accepted");
            assert!(err.contains("UnknownIssuer"), "{err}");
        }
    }

    #[tokio::test]
    async fn presents_a_client_certificate_when_configured() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = issuer("cluster CA");
        let ca_file = write(dir.path(), "ca.pem", &ca.pem());
        let (server_cert, server_key) =
            leaf(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let server = server_config(&server_cert, &server_key, Some(&ca));

        let without = client_config(&settings(Some(ca_file.clone())))
            .expect("config")
            .expect("tls on");
        round_trip(without, server.clone())
            .await
            .expect_err("the server requires a client certificate");

        let (cert, key) = leaf(&ca, &["chatnode"], ExtendedKeyUsagePurpose::ClientAuth);
        let with = client_config(&ScyllaSettings {
            tls_cert_file: Some(write(dir.path(), "client.pem", &cert)),
            tls_key_file: Some(write(dir.path(), "client.key", &key)),
            ..settings(Some(ca_file))
        })
        .expect("config")
        .expect("tls on");
        round_trip(with, server).await.expect("mutual TLS");
    }

    #[test]
    fn bad_files_name_the_setting() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = client_config(&settings(Some(dir.path().join("nope.pem"))))
            .expect_err("missing file")
            .to_string();
        assert!(missing.contains("scylla.tls_ca_file"), "{missing}");
        let not_pem = write(dir.path(), "ca.pem", "not a certificate");
        let err = client_config(&settings(Some(not_pem)))
            .expect_err("no certificate")
            .to_string();
        assert!(err.contains("scylla.tls_ca_file"), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");

        let ca = issuer("cluster CA");
        let ca_file = write(dir.path(), "ca2.pem", &ca.pem());
        let (cert, _) = leaf(&ca, &["chatnode"], ExtendedKeyUsagePurpose::ClientAuth);
        let err = client_config(&ScyllaSettings {
            tls_cert_file: Some(write(dir.path(), "client.pem", &cert)),
            tls_key_file: Some(write(dir.path(), "client.key", "no key here")),
            ..settings(Some(ca_file))
        })
        .expect_err("bad key")
        .to_string();
        assert!(err.contains("scylla.tls_key_file"), "{err}");
    }

    #[test]
    fn settings_check_requires_the_ca_and_pairs_cert_with_key() {
        let base = ScyllaSettings {
            nodes: Some("127.0.0.1:9042".into()),
            ..ScyllaSettings::default()
        };
        let no_ca = ScyllaSettings {
            tls: true,
            ..base.clone()
        };
        let (key, _) = crate::store::scylla::settings::check(&no_ca).expect_err("no CA");
        assert_eq!(key, "scylla.tls_ca_file");
        let half = ScyllaSettings {
            tls_cert_file: Some("client.pem".into()),
            ..base.clone()
        };
        let (key, _) = crate::store::scylla::settings::check(&half).expect_err("no key");
        assert_eq!(key, "scylla.tls_key_file");
        crate::store::scylla::settings::check(&base).expect("no TLS is fine");
    }
}
