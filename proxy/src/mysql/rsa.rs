//! The RSA key pair of a MySQL route for caching_sha2_password full authentication without
//! TLS: the client asks for the public key (0x02), dgf sends it as PEM, the client answers
//! with RSA-OAEP(SHA-1) of (password\0 XOR salt). Decryption uses aws-lc-rs (AWS-LC's
//! constant-time, blinded RSA); the `rsa` crate was rejected for RUSTSEC-2023-0071 (Marvin),
//! see docs/ARCHITECTURE.md "MySQL: RSA key for caching_sha2_password".

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1};
use base64::Engine;
use dgf_protocols::mysql::auth::RsaKey;
use rustls_pki_types::pem::{PemObject, SectionKind};

/// A route's key as configured (`options.rsa_private_key`).
pub enum RsaSetting {
    /// No key: full authentication without TLS is refused (errno 3159).
    Off,
    /// A 2048-bit key generated in the background when the route is built.
    Generate,
    /// A PEM file.
    File(String),
}

impl RsaSetting {
    /// Read the route option: unset means `Generate`, `"none"` / `"off"` mean `Off`.
    pub fn from_option(v: Option<&str>) -> Self {
        match v.map(str::trim) {
            None | Some("generate") => RsaSetting::Generate,
            Some("" | "none" | "off") => RsaSetting::Off,
            Some(path) => RsaSetting::File(path.to_owned()),
        }
    }

    /// The key for the route: loaded now (errors are configuration errors), generated in
    /// the background, or none.
    pub fn key(&self) -> Result<Option<std::sync::Arc<dyn RsaKey>>, RsaError> {
        Ok(match self {
            RsaSetting::Off => None,
            RsaSetting::File(path) => Some(std::sync::Arc::new(RouteRsa::load(path)?)),
            RsaSetting::Generate => Some(std::sync::Arc::new(GeneratedRsa::start())),
        })
    }
}

/// A key generated on a background thread (RSA key generation takes tens of milliseconds;
/// nobody waits for it unless a client asks for the public key in the first moments).
pub struct GeneratedRsa {
    cell: std::sync::Arc<std::sync::OnceLock<Option<RouteRsa>>>,
}

impl GeneratedRsa {
    /// Start generating.
    pub fn start() -> Self {
        let cell = std::sync::Arc::new(std::sync::OnceLock::new());
        let fill = cell.clone();
        let spawned = std::thread::Builder::new().name("dgf-rsa-keygen".into()).spawn(move || {
            let key = RouteRsa::generate()
                .map_err(|e| tracing::error!(error = %e, "MySQL route RSA key generation failed"))
                .ok();
            let _ = fill.set(key);
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start RSA key generation");
            let _ = cell.set(None);
        }
        Self { cell }
    }

    fn get(&self) -> Option<&RouteRsa> {
        self.cell.wait().as_ref()
    }
}

impl RsaKey for GeneratedRsa {
    fn public_pem(&self) -> &[u8] {
        self.get().map_or(&[], |k| k.public_pem())
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.get()?.decrypt(ciphertext)
    }
}

/// Why a route's RSA key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    /// The key file could not be read.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// The file holds no usable RSA private key.
    #[error("{0}: {1}")]
    Key(String, String),
    /// Key generation or encoding failed.
    #[error("RSA key: {0}")]
    Crypto(String),
}

/// An RSA private key and the PEM of its public half.
pub struct RouteRsa {
    key: OaepPrivateDecryptingKey,
    pem: Vec<u8>,
}

impl std::fmt::Debug for RouteRsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRsa").field("bits", &(self.key.key_size_bits())).finish_non_exhaustive()
    }
}

impl RouteRsa {
    /// A fresh 2048-bit key (made when a MySQL route without `rsa_private_key` is built).
    pub fn generate() -> Result<Self, RsaError> {
        let k = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|e| RsaError::Crypto(e.to_string()))?;
        Self::from_key(k)
    }

    /// Load a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`,
    /// what MySQL's `mysql_ssl_rsa_setup` writes).
    pub fn load(path: &str) -> Result<Self, RsaError> {
        let pem = std::fs::read(path).map_err(|e| RsaError::Read(path.to_owned(), e))?;
        Self::from_pem(&pem).map_err(|e| RsaError::Key(path.to_owned(), e))
    }

    /// Parse a PEM private key (see [`load`](Self::load)).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut found = None;
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
            let (kind, der) = item.map_err(|e| format!("not PEM: {e}"))?;
            match kind {
                SectionKind::PrivateKey => found = Some(der),
                SectionKind::RsaPrivateKey => found = Some(pkcs1_to_pkcs8(&der)),
                _ => {}
            }
            if found.is_some() {
                break;
            }
        }
        let der = found.ok_or("no `PRIVATE KEY` or `RSA PRIVATE KEY` PEM section")?;
        let k = PrivateDecryptingKey::from_pkcs8(&der).map_err(|e| format!("not an RSA private key: {e}"))?;
        Self::from_key(k).map_err(|e| e.to_string())
    }

    fn from_key(k: PrivateDecryptingKey) -> Result<Self, RsaError> {
        let spki = AsDer::<PublicKeyX509Der>::as_der(&k.public_key()).map_err(|e| RsaError::Crypto(e.to_string()))?;
        let pem = pem_encode("PUBLIC KEY", spki.as_ref());
        let key = OaepPrivateDecryptingKey::new(k).map_err(|e| RsaError::Crypto(e.to_string()))?;
        Ok(Self { key, pem })
    }
}

impl RsaKey for RouteRsa {
    fn public_pem(&self) -> &[u8] {
        &self.pem
    }

    fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.key.min_output_size()];
        let n = self.key.decrypt(&OAEP_SHA1_MGF1SHA1, ciphertext, &mut out, None).ok()?.len();
        out.truncate(n);
        Some(out)
    }
}

/// PEM text of one DER object (64-column base64 lines, trailing newline).
fn pem_encode(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Wrap a PKCS#1 RSAPrivateKey in a PKCS#8 PrivateKeyInfo (version 0, rsaEncryption, NULL).
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(ALG);
    body.push(0x04);
    der_len(&mut body, pkcs1.len());
    body.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_len(out: &mut Vec<u8>, n: usize) {
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    fn encrypt(k: &RouteRsa, msg: &[u8]) -> Vec<u8> {
        let (_, der) = <(SectionKind, Vec<u8>)>::pem_slice_iter(k.public_pem()).next().unwrap().unwrap();
        let public = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        public.encrypt(&OAEP_SHA1_MGF1SHA1, msg, &mut out, None).unwrap().to_vec()
    }

    #[test]
    fn generated_key_round_trips_and_rejects_garbage() {
        let k = RouteRsa::generate().unwrap();
        assert!(k.public_pem().starts_with(b"-----BEGIN PUBLIC KEY-----\n"));
        let c = encrypt(&k, b"secret\0");
        assert_eq!(k.decrypt(&c).as_deref(), Some(&b"secret\0"[..]));
        assert_eq!(k.decrypt(&[0u8; 256]), None);
        assert_eq!(k.decrypt(b"short"), None);
        // the same client-side encryption mysql_common uses upstream
        let c = mysql_common::crypto::encrypt(b"pw\0", k.public_pem()).unwrap();
        assert_eq!(k.decrypt(&c).as_deref(), Some(&b"pw\0"[..]));
    }

    #[test]
    fn loads_pkcs8_and_pkcs1_pem() {
        let k = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k).unwrap();
        let pem = pem_encode("PRIVATE KEY", der.as_ref());
        let a = RouteRsa::from_pem(&pem).unwrap();
        // PKCS#1 is the OCTET STRING inside the PKCS#8 document: unwrap it and load that
        let pkcs8 = der.as_ref();
        let inner = pkcs1_inside(pkcs8);
        let b = RouteRsa::from_pem(&pem_encode("RSA PRIVATE KEY", inner)).unwrap();
        assert_eq!(a.public_pem(), b.public_pem());
        assert!(RouteRsa::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
        assert!(RouteRsa::from_pem(b"junk").is_err());
        assert!(matches!(RsaSetting::from_option(Some("none")), RsaSetting::Off));
        assert!(matches!(RsaSetting::from_option(None), RsaSetting::Generate));
        assert!(matches!(RsaSetting::from_option(Some("/k.pem")), RsaSetting::File(_)));
    }

    #[test]
    fn full_auth_over_rsa_between_dgf_client_and_server_state_machines() {
        use dgf_protocols::mysql::auth::{ClientAuth, ClientStep, ServerAuth, ServerStep};
        use dgf_protocols::mysql::consts::plugin;
        let key = RouteRsa::generate().unwrap();
        let salt = *b"0123456789abcdefghij";
        for (password, expect_ok) in [(&b"app_pw"[..], true), (&b"wrong"[..], false)] {
            let mut client = ClientAuth::new(password, false, plugin::CACHING_SHA2, &salt);
            let mut server = ServerAuth::new(salt, Some(b"app_pw"), false, Some(&key)).always_full_auth(true);
            let ServerStep::Reply(more) = server.start(Some(plugin::CACHING_SHA2), &client.initial()) else { panic!() };
            let ClientStep::Send(ask) = client.next(&more) else { panic!() };
            assert_eq!(ask, [2]);
            let ServerStep::Reply(pem) = server.next(&ask) else { panic!() };
            let ClientStep::Send(cipher) = client.next(&pem) else { panic!() };
            let done = server.next(&cipher);
            assert_eq!(done == (ServerStep::Success { extra: None }), expect_ok, "{done:?}");
        }
        // a client that already has the public key sends the ciphertext at once
        for (password, expect_ok) in [(&b"app_pw"[..], true), (&b"wrong"[..], false)] {
            let mut server = ServerAuth::new(salt, Some(b"app_pw"), false, Some(&key)).always_full_auth(true);
            assert_eq!(server.start(Some(plugin::CACHING_SHA2), &[]), ServerStep::Reply(vec![1, 4]));
            let mut plain = password.to_vec();
            plain.push(0);
            let xored: Vec<u8> = plain.iter().enumerate().map(|(i, b)| b ^ salt[i % salt.len()]).collect();
            let cipher = encrypt(&key, &xored);
            assert_eq!(server.next(&cipher) == (ServerStep::Success { extra: None }), expect_ok);
        }
        // without a key the request for it is refused (3159)
        let mut server = ServerAuth::new(salt, Some(b"app_pw"), false, None).always_full_auth(true);
        server.start(Some(plugin::CACHING_SHA2), &[]);
        assert_eq!(server.next(&[2]), ServerStep::InsecureTransport);
    }

    /// The privateKey OCTET STRING of a PKCS#8 document made by aws-lc-rs.
    fn pkcs1_inside(pkcs8: &[u8]) -> &[u8] {
        let mut i = 0;
        let read_len = |d: &[u8], at: &mut usize| -> usize {
            let b = d[*at] as usize;
            *at += 1;
            if b < 0x80 {
                return b;
            }
            let n = b & 0x7f;
            let mut v = 0;
            for _ in 0..n {
                v = (v << 8) | d[*at] as usize;
                *at += 1;
            }
            v
        };
        assert_eq!(pkcs8[i], 0x30);
        i += 1;
        read_len(pkcs8, &mut i);
        // version INTEGER 0, AlgorithmIdentifier SEQUENCE: skip both
        for _ in 0..2 {
            i += 1;
            let l = read_len(pkcs8, &mut i);
            i += l;
        }
        assert_eq!(pkcs8[i], 0x04);
        i += 1;
        let l = read_len(pkcs8, &mut i);
        &pkcs8[i..i + l]
    }
}
