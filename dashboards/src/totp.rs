//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP: HMAC-SHA1, 6 digits, 30-second
//! steps) — the second factor of sign-in — and the base32 text authenticator apps are given the secret
//! in (RFC 4648). A code is accepted in the step it belongs to or one step either side (clock drift),
//! and only in a step after the last one accepted for that user: each code works once.

use hmac::{Hmac, Mac};
use kartoteka_engine::lake::constant_time_eq;
use sha1::Sha1;
use zeroize::Zeroizing;

/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;

/// One user's TOTP secret. Its `Debug` shows nothing of it.
pub struct Totp {
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Totp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Totp(<secret>)")
    }
}

impl Totp {
    /// A new random secret.
    pub fn generate() -> Totp {
        use rand::RngCore;
        let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(&mut secret);
        Totp { secret }
    }

    /// The secret `bytes` (as stored, after decryption).
    pub fn from_secret(bytes: &[u8]) -> Totp {
        Totp {
            secret: Zeroizing::new(bytes.to_vec()),
        }
    }

    /// The raw secret, to be encrypted before it is stored.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// RFC 4226 HOTP for `counter`, as `DIGITS` decimal digits.
    pub fn hotp(&self, counter: u64) -> String {
        let mut mac =
            Hmac::<Sha1>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(&counter.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[digest.len() - 1] & 0x0f);
        let binary = (u32::from(digest[offset] & 0x7f) << 24)
            | (u32::from(digest[offset + 1]) << 16)
            | (u32::from(digest[offset + 2]) << 8)
            | u32::from(digest[offset + 3]);
        format!(
            "{:0width$}",
            binary % 10u32.pow(DIGITS),
            width = DIGITS as usize
        )
    }

    /// The code for the step holding `unix_seconds`.
    pub fn code_at(&self, unix_seconds: u64) -> String {
        self.hotp(unix_seconds / STEP_SECONDS)
    }

    /// Check `code` at `unix_seconds`: the step it matches (the current one, or one either side), when
    /// that step is after `last_used` — the caller stores the step so the code is not accepted again.
    pub fn verify(&self, code: &str, unix_seconds: u64, last_used: Option<u64>) -> Option<u64> {
        let code = code.trim();
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix_seconds / STEP_SECONDS;
        let mut matched = None;
        // Every candidate is computed and compared in constant time: the time taken does not say
        // which step (if any) matched.
        for step in [now.saturating_sub(1), now, now + 1] {
            let same = constant_time_eq(self.hotp(step).as_bytes(), code.as_bytes());
            if same && last_used.is_none_or(|used| step > used) && matched.is_none() {
                matched = Some(step);
            }
        }
        matched
    }

    /// The secret as an authenticator app takes it: base32 without padding.
    pub fn secret_base32(&self) -> String {
        base32_encode(&self.secret)
    }

    /// The `otpauth://` URI of a QR code for this secret.
    pub fn uri(&self, issuer: &str, account: &str) -> String {
        let issuer = percent(issuer);
        format!(
            "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            percent(account),
            self.secret_base32()
        )
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32, without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// RFC 4648 base32 (padding, spaces and lower case accepted); `None` for any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b'=' | b' ' | b'-')) {
        let value = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4226 appendix D: HOTP of the ASCII secret "12345678901234567890", counters 0..9.
    #[test]
    fn hotp_matches_rfc_4226() {
        let t = Totp::from_secret(b"12345678901234567890");
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in want.iter().enumerate() {
            assert_eq!(t.hotp(counter as u64), *code, "counter {counter}");
        }
    }

    /// RFC 6238 appendix B (SHA-1 rows; the RFC prints 8 digits, a 6-digit code is their last six).
    #[test]
    fn totp_matches_rfc_6238() {
        let t = Totp::from_secret(b"12345678901234567890");
        for (time, eight) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.code_at(time), eight[2..], "time {time}");
        }
    }

    #[test]
    fn a_code_is_accepted_once_and_only_near_its_time() {
        let t = Totp::generate();
        let now = 1_800_000_000;
        let code = t.code_at(now);
        let step = t.verify(&code, now, None).expect("current step");
        assert_eq!(step, now / STEP_SECONDS);
        assert_eq!(t.verify(&code, now, Some(step)), None, "replayed");
        assert_eq!(
            t.verify(&t.code_at(now - 30), now, None),
            Some(step - 1),
            "one step of drift"
        );
        assert_eq!(t.verify(&t.code_at(now - 90), now, None), None, "too old");
        assert_eq!(t.verify("12345", now, None), None);
        assert_eq!(t.verify("abcdef", now, None), None);
        assert!(!format!("{t:?}").contains(&t.secret_base32()));
    }

    #[test]
    fn base32_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), encoded);
            assert_eq!(base32_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(
            base32_decode("mzxw 6ytb oi======").as_deref(),
            Some(&b"foobar"[..])
        );
        assert_eq!(base32_decode("MZ1W"), None);
        let t = Totp::generate();
        assert_eq!(
            base32_decode(&t.secret_base32()).as_deref(),
            Some(t.secret())
        );
        let uri = t.uri("Kartoteka", "olga@example.org");
        assert!(
            uri.starts_with("otpauth://totp/Kartoteka:olga%40example.org?secret=")
                && uri.ends_with("&issuer=Kartoteka&algorithm=SHA1&digits=6&period=30"),
            "{uri}"
        );
    }
}
