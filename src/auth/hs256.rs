//! HS256 for jsonwebtoken 10 on `ring`, the crypto library already in the tree (rustls and
//! reqwest use it). jsonwebtoken 10 takes its cryptography from a provider; its own are
//! RustCrypto (which brings the `rsa` crate and its open advisory, RUSTSEC-2023-0071, for an
//! algorithm Herald never uses) or aws-lc-rs (a second C crypto library to build). Herald
//! signs and verifies HS256 only, so the provider knows that one algorithm and refuses the
//! rest.

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::hmac;

struct Hs256(hmac::Key);

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.0, msg).as_ref().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, msg: &[u8], tag: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        // Constant time.
        hmac::verify(&self.0, msg, tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn only_hs256(algorithm: &Algorithm) -> Result<()> {
    match algorithm {
        Algorithm::HS256 => Ok(()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    only_hs256(algorithm)?;
    let secret = key.try_get_hmac_secret()?;
    Ok(Box::new(Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret))))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    only_hs256(algorithm)?;
    let secret = key.try_get_hmac_secret()?;
    Ok(Box::new(Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret))))
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes this provider jsonwebtoken's for the process (once; later calls change nothing).
pub fn install() {
    let _ = PROVIDER.install_default();
}
