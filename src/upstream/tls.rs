//! The TLS client configuration for one upstream: which certificates it
//! trusts (system roots, plus `ca_file`), or, with `insecure`, none at all.

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::UpstreamError;
use crate::config::UpstreamConfig;

/// Builds the rustls configuration. The ring provider is named explicitly so
/// that nothing depends on (or races to install) a process-wide default.
pub(super) fn client_config(cfg: &UpstreamConfig) -> Result<ClientConfig, UpstreamError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Config(format!("TLS protocol versions: {e}")))?;
    // The CA file is read even when `insecure` makes it moot, so that a
    // broken path is reported rather than silently ignored.
    let mut extra_roots = match &cfg.ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    if let Some(pem) = &cfg.ca_pem {
        extra_roots.extend(parse_pem(pem.as_bytes(), "ca_cert")?);
    }
    let config = if cfg.insecure {
        tracing::warn!(
            upstream = %cfg.name,
            "TLS certificate verification is disabled for this upstream (insecure = true)"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert::new(&provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(root_store(cfg, extra_roots)?).with_no_client_auth()
    };
    Ok(config)
}

/// System roots plus the configured CA file. A host without a system bundle
/// is not an error: http upstreams, or a `ca_file`, still work.
fn root_store(
    cfg: &UpstreamConfig,
    extra: Vec<CertificateDer<'static>>,
) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::warn!(
            upstream = %cfg.name,
            errors = ?native.errors,
            "some system CA certificates could not be loaded"
        );
    }
    // Unparseable system certificates are skipped, as every TLS client does;
    // one odd entry in a distribution bundle must not take wharf down.
    let (added, skipped) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(upstream = %cfg.name, added, skipped, "loaded system CA certificates");
    for cert in extra {
        // The operator named this file; a certificate in it that cannot be
        // used is a configuration error, not something to skip quietly.
        roots
            .add(cert)
            .map_err(|e| UpstreamError::Config(format!("ca_file: unusable certificate: {e}")))?;
    }
    if roots.is_empty() && cfg.url.scheme_str() == Some("https") {
        tracing::warn!(
            upstream = %cfg.name,
            "no trusted CA certificates: TLS connections to this upstream will fail"
        );
    }
    Ok(roots)
}

fn parse_pem(mut pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let certs = rustls_pemfile::certs(&mut pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamError::Config(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(UpstreamError::Config(format!("{what}: contains no PEM certificate")));
    }
    Ok(certs)
}

fn read_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, UpstreamError> {
    let file = File::open(path)
        .map_err(|e| UpstreamError::Config(format!("ca_file {}: {e}", path.display())))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamError::Config(format!("ca_file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(UpstreamError::Config(format!(
            "ca_file {}: contains no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Accepts any server certificate (`insecure = true`). The handshake
/// signatures are still checked, so the peer must hold the key of the
/// certificate it presents; only the chain and the name go unverified.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyServerCert {
    fn new(provider: &CryptoProvider) -> AnyServerCert {
        AnyServerCert { algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
