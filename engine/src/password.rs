//! The password rules (NIST SP 800-63B, OWASP ASVS 5.0; see shared/design/security.md): long enough —
//! 12 characters with a second factor, 15 without — at most 128, no composition rules, and not one a
//! guesser tries first: the 30 000 most common passwords (bundled), one of them with digits or symbols
//! added around it, one short piece repeated, or the login itself.

use std::collections::HashSet;
use std::sync::LazyLock;

/// Shortest password for a user with a second factor.
pub const MIN_WITH_SECOND_FACTOR: usize = 12;
/// Shortest password for a user signing in with the password alone.
pub const MIN_WITHOUT_SECOND_FACTOR: usize = 15;
/// Longest password (argon2 takes anything, but a megabyte "password" is an attack on the CPU).
pub const MAX: usize = 128;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// Why a new password is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weakness {
    /// Fewer characters than the minimum.
    TooShort {
        /// The minimum that applies.
        min: usize,
    },
    /// More than [`MAX`] characters.
    TooLong,
    /// A common password, or one with digits or symbols around it.
    Common,
    /// One short piece repeated (`aaaaaaaaaaaa`, `abcabcabcabc`).
    Repetitive,
    /// It contains the login.
    ContainsLogin,
    /// It is the password it would replace.
    Unchanged,
}

impl Weakness {
    /// What to tell the person choosing it, in Russian.
    pub fn ru(&self) -> String {
        match self {
            Weakness::TooShort { min } => format!("Пароль должен быть не короче {min} символов."),
            Weakness::TooLong => format!("Пароль должен быть не длиннее {MAX} символов."),
            Weakness::Common => {
                "Этот пароль слишком распространён: его подбирают первым. Возьмите фразу из \
                 нескольких слов."
                    .into()
            }
            Weakness::Repetitive => "В пароле повторяется один и тот же фрагмент.".into(),
            Weakness::ContainsLogin => "Пароль не должен содержать логин.".into(),
            Weakness::Unchanged => "Новый пароль должен отличаться от прежнего.".into(),
        }
    }

    /// What to tell the person choosing it, in English.
    pub fn en(&self) -> String {
        match self {
            Weakness::TooShort { min } => {
                format!("The password must be at least {min} characters.")
            }
            Weakness::TooLong => format!("The password must be at most {MAX} characters."),
            Weakness::Common => {
                "This password is too common: guessers try it first. Use a phrase of several words."
                    .into()
            }
            Weakness::Repetitive => "The password repeats one short piece.".into(),
            Weakness::ContainsLogin => "The password must not contain the login.".into(),
            Weakness::Unchanged => "The new password must differ from the old one.".into(),
        }
    }
}

/// Check a new password for `login`; `second_factor` says whether the user signs in with one.
pub fn check(login: &str, password: &str, second_factor: bool) -> Result<(), Weakness> {
    let min = if second_factor {
        MIN_WITH_SECOND_FACTOR
    } else {
        MIN_WITHOUT_SECOND_FACTOR
    };
    let chars: Vec<char> = password.chars().collect();
    if chars.len() < min {
        return Err(Weakness::TooShort { min });
    }
    if chars.len() > MAX {
        return Err(Weakness::TooLong);
    }
    let lower = password.to_lowercase();
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    if COMMON.contains(lower.as_str()) || (core.chars().count() >= 4 && COMMON.contains(core)) {
        return Err(Weakness::Common);
    }
    let n = chars.len();
    if (1..=n / 2)
        .any(|p| n.is_multiple_of(p) && chars.iter().enumerate().all(|(i, c)| *c == chars[i % p]))
    {
        return Err(Weakness::Repetitive);
    }
    if login.chars().count() >= 3 && lower.contains(&login.to_lowercase()) {
        return Err(Weakness::ContainsLogin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_refuse_what_guessers_try_and_accept_long_phrases() {
        let ok = "конь батарейка скрепка";
        assert_eq!(check("olga", ok, true), Ok(()));
        assert_eq!(check("olga", "correct horse", true), Ok(()));
        // 13 characters: enough with a second factor, not without.
        assert_eq!(
            check("olga", "correct horse", false),
            Err(Weakness::TooShort { min: 15 })
        );
        assert_eq!(
            check("olga", "short", true),
            Err(Weakness::TooShort { min: 12 })
        );
        assert_eq!(
            check("olga", &"x".repeat(129), true),
            Err(Weakness::TooLong)
        );
        // Length counts characters, not bytes: 12 Cyrillic letters are 24 bytes.
        assert_eq!(
            check("olga", "пароль", true),
            Err(Weakness::TooShort { min: 12 })
        );
        // In the list as it is, in another case, and with digits and symbols around it.
        for common in [
            "1qaz2wsx3edc",
            "1QAZ2WSX3EDC",
            "PASSWORD12345678",
            "baseball2024!!",
            "!!sunshine1234",
        ] {
            assert_eq!(
                check("olga", common, true),
                Err(Weakness::Common),
                "{common}"
            );
        }
        for repeated in ["aaaaaaaaaaaa", "abcabcabcabc", "zx9zx9zx9zx9"] {
            assert_eq!(
                check("olga", repeated, true),
                Err(Weakness::Repetitive),
                "{repeated}"
            );
        }
        assert_eq!(
            check("manager-3", "I am Manager-3 of the year", true),
            Err(Weakness::ContainsLogin)
        );
        // The list is there: 30 000 entries.
        assert!(COMMON.len() > 29_000, "{}", COMMON.len());
    }
}
