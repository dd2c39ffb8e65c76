//! The one text normalization used for both patterns and article text.
//!
//! Whatever a pattern becomes here, the same words in an article become too, so matching is
//! a plain byte search over the output. The output alphabet is `[a-z0-9 ]`:
//!
//! 1. Unicode NFKC per character (ligatures, full-width forms, superscripts).
//! 2. Transliteration to ASCII with `any_ascii` (accents dropped, Cyrillic — Kazakh letters
//!    included — Greek and others romanized), so `Tokaïev`, `Токаев` and `Tokaev` meet.
//! 3. ASCII lower-casing.
//! 4. Everything that is not a letter or digit is a word break, collapsed to one space. This
//!    splits French elisions (`l’armée` → `l armee`) and hyphenated names (`Nour-Soultan`
//!    → `nour soultan`; patterns also get a joined variant, see [`variants`]).
//!
//! [`Normalized::offsets`] maps every output byte back to the byte offset of the original
//! character it came from, so a match can quote its evidence from the original text.

use unicode_normalization::UnicodeNormalization;

/// Normalized text plus the map back to the original.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// `[a-z0-9 ]` only, words separated by exactly one space, no leading or trailing space.
    pub text: String,
    /// For each byte of `text`, the byte offset in the original of the character it came from.
    pub offsets: Vec<u32>,
}

impl Normalized {
    /// The original byte range covered by normalized bytes `start..end`.
    pub fn original_range(&self, original: &str, start: usize, end: usize) -> (usize, usize) {
        let s = self.offsets.get(start).copied().unwrap_or(0) as usize;
        let last = self
            .offsets
            .get(end.saturating_sub(1))
            .copied()
            .unwrap_or(0) as usize;
        // Extend to the end of the last original character.
        let e = original[last..]
            .chars()
            .next()
            .map_or(original.len(), |c| last + c.len_utf8());
        (s, e.max(s))
    }
}

/// Normalizes `input`, keeping the offset map.
pub fn normalize(input: &str) -> Normalized {
    let mut out = Normalized {
        text: String::with_capacity(input.len()),
        offsets: Vec::with_capacity(input.len()),
    };
    // True when the last byte written is a space (or nothing was written yet), so runs of
    // breaks collapse and no leading space appears.
    let mut at_break = true;
    let push = |out: &mut Normalized, b: u8, at: usize, at_break: &mut bool| {
        if b.is_ascii_alphanumeric() {
            out.text.push(b.to_ascii_lowercase() as char);
            out.offsets.push(at as u32);
            *at_break = false;
        } else if !*at_break {
            out.text.push(' ');
            out.offsets.push(at as u32);
            *at_break = true;
        }
    };
    let mut buf = String::new();
    for (at, c) in input.char_indices() {
        if c.is_ascii() {
            push(&mut out, c as u8, at, &mut at_break);
            continue;
        }
        buf.clear();
        if let Some(latin) = kazakh_letter(c) {
            // any_ascii romanizes Kazakh letters with digraphs and `q` (Тоқаев → toqaev);
            // news in every language writes them the Russian way (Tokaev), so we do too.
            buf.push_str(latin);
            for b in buf.bytes() {
                push(&mut out, b, at, &mut at_break);
            }
            continue;
        }
        for d in std::iter::once(c).nfkc() {
            if d.is_ascii() {
                buf.push(d);
            } else {
                buf.push_str(any_ascii::any_ascii_char(d));
            }
        }
        if buf.is_empty() {
            // Combining marks and the like vanish without breaking the word.
            continue;
        }
        for b in buf.bytes() {
            push(&mut out, b, at, &mut at_break);
        }
    }
    if out.text.ends_with(' ') {
        out.text.pop();
        out.offsets.pop();
    }
    out
}

/// Latin spelling of the Kazakh Cyrillic letters that Russian lacks.
fn kazakh_letter(c: char) -> Option<&'static str> {
    Some(match c {
        'қ' | 'Қ' => "k",
        'ғ' | 'Ғ' => "g",
        'ң' | 'Ң' => "n",
        'ұ' | 'Ұ' | 'ү' | 'Ү' => "u",
        'ө' | 'Ө' => "o",
        'ә' | 'Ә' => "a",
        'һ' | 'Һ' => "h",
        'і' | 'І' => "i",
        _ => return None,
    })
}

/// Normalized text only, for patterns and places that need no evidence.
pub fn normalize_str(input: &str) -> String {
    normalize(input).text
}

/// The normalized forms a pattern should be searched under: the form itself and, when it
/// has several words joined by hyphens or apostrophes in the original, the joined variant
/// (`Nur-Sultan` → `nur sultan`, `nursultan`).
pub fn variants(pattern: &str) -> Vec<String> {
    let spaced = normalize_str(pattern);
    let mut out = vec![spaced.clone()];
    if spaced.is_empty() {
        return Vec::new();
    }
    let joined_in_original = pattern.contains(['-', '\u{2010}', '\u{2011}', '\'', '\u{2019}']);
    if joined_in_original && spaced.contains(' ') {
        let joined: String = spaced.chars().filter(|c| *c != ' ').collect();
        if joined != spaced {
            out.push(joined);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(normalize_str("Tokaïev, président!"), "tokaiev president");
        assert_eq!(normalize_str("  l’armée d'Almaty  "), "l armee d almaty");
        assert_eq!(normalize_str("Nour-Soultan"), "nour soultan");
        assert_eq!(normalize_str("ﬁnance Ｋazakh"), "finance kazakh");
    }

    #[test]
    fn transliterates_cyrillic_including_kazakh_letters() {
        assert_eq!(normalize_str("Токаев"), "tokaev");
        assert_eq!(normalize_str("Нур-Султан"), "nur sultan");
        assert_eq!(normalize_str("Тоқаев"), "tokaev");
        assert_eq!(normalize_str("Нұр-Сұлтан"), "nur sultan");
        assert_eq!(normalize_str("Путин"), "putin");
    }

    #[test]
    fn offsets_point_back_to_the_original() {
        let original = "Le président Tokaïev à Almaty";
        let n = normalize(original);
        let start = n.text.find("tokaiev").unwrap();
        let (s, e) = n.original_range(original, start, start + "tokaiev".len());
        assert_eq!(&original[s..e], "Tokaïev");
        assert_eq!(n.text.len(), n.offsets.len());
    }

    #[test]
    fn pattern_variants_include_joined_form() {
        assert_eq!(variants("Nur-Sultan"), vec!["nur sultan", "nursultan"]);
        assert_eq!(variants("Almaty"), vec!["almaty"]);
        assert!(variants("--").is_empty());
    }
}
