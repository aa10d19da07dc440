//! TLS for the gRPC port with rustls (ring), from TensorFlow Serving's SSLConfig fields.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// server_key, server_cert, custom_ca (empty: none), client_verify.
pub type TlsFiles = (Vec<u8>, Vec<u8>, Vec<u8>, bool);

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no PEM certificate"));
    }
    Ok(certs)
}

/// The server's rustls config. With `client_verify`, a client must present a certificate
/// signed by `custom_ca` or the handshake fails (TF Serving's client_verify); without it no
/// client certificate is asked for.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let (key, cert, custom_ca, client_verify) = files;
    // ring, not aws-lc-rs: it builds with cargo alone (no cmake/C toolchain setup). rustls
    // 0.23.48 deprecates it for lacking post-quantum key exchange, which gRPC clients do not
    // offer today anyway.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(cert, "server_cert")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("server_key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if *client_verify {
        if custom_ca.is_empty() {
            return Err(
                "client_verify needs a custom_ca to verify client certificates against".into(),
            );
        }
        let mut roots = RootCertStore::empty();
        for ca in certificates(custom_ca, "custom_ca")? {
            roots.add(ca).map_err(|e| format!("custom_ca: {e}"))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("custom_ca: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("server_cert/server_key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
