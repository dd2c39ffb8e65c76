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
//! [`Normalized::origins`] maps every output word back to the original characters it came
//! from, so a match can quote its evidence from the original text (matches are whole words,
//! so a map per word is all they need, and much cheaper to build than one per byte).

use unicode_normalization::UnicodeNormalization;

/// Normalized text plus the map back to the original.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// `[a-z0-9 ]` only, words separated by exactly one space, no leading or trailing space.
    pub text: String,
    /// Where each word of `text` starts, in order. Recorded while normalizing so that the
    /// matcher and the story hash walk words without splitting the text again.
    pub words: Vec<u32>,
    /// Per word, the byte offsets in the original of the characters its first and last
    /// bytes came from.
    pub origins: Vec<(u32, u32)>,
}

impl Normalized {
    /// Byte ranges of the words of `text`, in order.
    pub fn word_ranges(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.words.iter().enumerate().map(|(i, &s)| {
            let e = self
                .words
                .get(i + 1)
                .map_or(self.text.len(), |&next| next as usize - 1);
            (s as usize, e)
        })
    }

    /// The original byte range covered by words `first..=last`.
    pub fn original_range(&self, original: &str, first: usize, last: usize) -> (usize, usize) {
        let s = self.origins.get(first).map_or(0, |o| o.0 as usize);
        let last = self.origins.get(last).map_or(0, |o| o.1 as usize);
        // Extend to the end of the last original character.
        let e = original
            .get(last..)
            .and_then(|rest| rest.chars().next())
            .map_or(original.len(), |c| last + c.len_utf8());
        (s.min(original.len()), e.max(s).min(original.len()))
    }
}

/// What an ASCII byte becomes: itself lower-cased if a letter or digit, else 0 (a break).
const ASCII_MAP: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = c.to_ascii_lowercase();
        }
        b += 1;
    }
    t
};

/// Normalizes `input`, keeping the offset map.
///
/// News text is mostly ASCII even in French (accented letters are a few percent), so bytes
/// below 0x80 take a table lookup; only other characters go through NFKC and
/// transliteration.
pub fn normalize(input: &str) -> Normalized {
    let bytes = input.as_bytes();
    // Written by index, not pushed: the ASCII loop below is branch-free per byte (a word
    // break every six bytes or so would otherwise mispredict often). ASCII input never
    // grows; transliteration may (`ﬃ` → `ffi`), and makes room itself.
    let mut text: Vec<u8> = vec![0; bytes.len() + 1];
    // A word takes at least two bytes of output (letter and space), except the last. The
    // last slot of `origins` is scratch, written by bytes that are not in a word.
    let mut words: Vec<u32> = vec![0; bytes.len() / 2 + 2];
    let mut origins: Vec<(u32, u32)> = vec![(0, 0); bytes.len() / 2 + 3];
    let mut n_words = 0usize;
    let mut len = 0usize;
    // True when the last byte written is a space (or nothing was written yet), so runs of
    // breaks collapse and no leading space appears.
    let mut at_break = true;
    let mut buf = String::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if b < 0x80 {
            let m = ASCII_MAP[b as usize];
            let word = m != 0;
            text[len] = if word { m } else { b' ' };
            words[n_words] = len as u32;
            origins[n_words].0 = at as u32;
            n_words += usize::from(word && at_break);
            let current = if word { n_words - 1 } else { origins.len() - 1 };
            origins[current].1 = at as u32;
            len += usize::from(word || !at_break);
            at_break = !word;
            at += 1;
            continue;
        }
        // `at` is a character boundary: ASCII bytes are whole characters and this branch
        // steps over whole characters.
        let Some(c) = input[at..].chars().next() else {
            break;
        };
        buf.clear();
        match common_letter(c) {
            Some(ascii) => buf.push_str(ascii),
            None => transliterate(c, &mut buf),
        }
        // Room for this character's bytes and one more byte for the loop above, whatever
        // the remaining input (each remaining byte can write at most one).
        let need = len + buf.len() + (bytes.len() - at) + 1;
        if need > text.len() {
            text.resize(need, 0);
            words.resize(need / 2 + 2, 0);
            origins.resize(need / 2 + 3, (0, 0));
        }
        // Combining marks and the like come out empty and vanish without breaking the word.
        for b in buf.bytes() {
            let m = if b < 0x80 { ASCII_MAP[b as usize] } else { 0 };
            if m != 0 {
                if at_break {
                    words[n_words] = len as u32;
                    origins[n_words].0 = at as u32;
                    n_words += 1;
                }
                origins[n_words - 1].1 = at as u32;
                text[len] = m;
                len += 1;
                at_break = false;
            } else if !at_break {
                text[len] = b' ';
                len += 1;
                at_break = true;
            }
        }
        at += c.len_utf8();
    }
    if len > 0 && text[len - 1] == b' ' {
        len -= 1;
    }
    text.truncate(len);
    words.truncate(n_words);
    origins.truncate(n_words);
    Normalized {
        // Only bytes of `[a-z0-9 ]` were written.
        text: String::from_utf8(text).expect("normalized text is ASCII"),
        words,
        origins,
    }
}

/// What one non-ASCII character becomes before lower-casing and word breaks: NFKC, then
/// any_ascii (or our Kazakh spellings).
fn transliterate(c: char, buf: &mut String) {
    if let Some(latin) = kazakh_letter(c) {
        // any_ascii romanizes Kazakh letters with digraphs and `q` (Тоқаев → toqaev);
        // news in every language writes them the Russian way (Tokaev), so we do too.
        buf.push_str(latin);
        return;
    }
    for d in std::iter::once(c).nfkc() {
        if d.is_ascii() {
            buf.push(d);
        } else {
            buf.push_str(any_ascii::any_ascii_char(d));
        }
    }
}

/// Characters below this have their [`transliterate`] output tabled: accented Latin,
/// Greek and Cyrillic, nearly every non-ASCII character of European news. NFKC sets up an
/// iterator per character and any_ascii searches its tables, which made these few percent
/// of the characters most of the normalization cost.
const TABLED: u32 = 0x530;

/// [`transliterate`] of a character below [`TABLED`], from a table built on first use by
/// the same function (so the two cannot disagree).
fn common_letter(c: char) -> Option<&'static str> {
    static TABLE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let i = (c as u32)
        .checked_sub(0x80)
        .filter(|_| (c as u32) < TABLED)?;
    let table = TABLE.get_or_init(|| {
        (0x80..TABLED)
            .map(|cp| {
                let mut out = String::new();
                if let Some(ch) = char::from_u32(cp) {
                    transliterate(ch, &mut out);
                }
                out
            })
            .collect()
    });
    table.get(i as usize).map(String::as_str)
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
        let word = n.text.split(' ').position(|w| w == "tokaiev").unwrap();
        let (s, e) = n.original_range(original, word, word);
        assert_eq!(&original[s..e], "Tokaïev");
        let (s, e) = n.original_range(original, word, word + 2);
        assert_eq!(&original[s..e], "Tokaïev à Almaty");
        assert_eq!(n.words.len(), n.origins.len());
    }

    #[test]
    fn pattern_variants_include_joined_form() {
        assert_eq!(variants("Nur-Sultan"), vec!["nur sultan", "nursultan"]);
        assert_eq!(variants("Almaty"), vec!["almaty"]);
        assert!(variants("--").is_empty());
    }

    /// Normalized text with the original offset of every byte (the map before per-word
    /// origins).
    struct ByteMap {
        text: String,
        offsets: Vec<u32>,
    }

    /// The definition the ASCII fast path must agree with: every character, ASCII or not,
    /// through the same steps.
    fn one_char_at_a_time(input: &str) -> ByteMap {
        let mut out = ByteMap {
            text: String::with_capacity(input.len()),
            offsets: Vec::with_capacity(input.len()),
        };
        // True when the last byte written is a space (or nothing was written yet), so runs of
        // breaks collapse and no leading space appears.
        let mut at_break = true;
        let push = |out: &mut ByteMap, b: u8, at: usize, at_break: &mut bool| {
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

    #[test]
    fn fast_path_agrees_with_one_char_at_a_time() {
        let mut texts: Vec<String> = vec![
            "".into(),
            "  ".into(),
            "Tokaïev—l’armée, Нұр-Сұлтан ﬁn e\u{301} 3,5 % ?!".into(),
            "é".into(),
            "a\u{301}\u{301}b".into(),
        ];
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds");
        if let Ok(dir) = std::fs::read_dir(&seeds) {
            for e in dir.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    texts.push(t);
                }
            }
        }
        let opts = crate::generate::GenerateOptions {
            seed: 3,
            days: 1,
            rate: 10.0,
            ..Default::default()
        };
        crate::generate::generate(&opts, &mut |v| texts.push(v.to_string())).unwrap();
        for t in &texts {
            let (a, b) = (normalize(t), one_char_at_a_time(t));
            assert_eq!(a.text, b.text);
            let origins: Vec<(u32, u32)> = a
                .word_ranges()
                .map(|(s, e)| (b.offsets[s], b.offsets[e - 1]))
                .collect();
            assert_eq!(a.origins, origins);
            let words: Vec<&str> = a.word_ranges().map(|(s, e)| &a.text[s..e]).collect();
            let split: Vec<&str> = a.text.split(' ').filter(|w| !w.is_empty()).collect();
            assert_eq!(words, split);
        }
    }
}
