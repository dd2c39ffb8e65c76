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
/// News text is mostly ASCII even in French (accented letters are a few percent), so runs
/// of ASCII go eight bytes at a time ([`Out::ascii_lane`]); only other characters go
/// through NFKC and transliteration, one at a time.
pub fn normalize(input: &str) -> Normalized {
    let bytes = input.as_bytes();
    let mut out = Out::new(bytes.len());
    let mut buf = String::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(lane) = bytes.get(at..at + LANE) {
            let x = u64::from_le_bytes(lane.try_into().expect("a lane is eight bytes"));
            // A lane with a non-ASCII byte goes a byte at a time up to it. Handling its
            // ASCII prefix as a partial lane was measured slower (criterion
            // `normalize/title_and_body`: 4.1–4.3 ms against 3.8–3.9 ms per 500 articles).
            if x & HIGH == 0 {
                out.ascii_lane(x, at);
                at += LANE;
                continue;
            }
        }
        let b = bytes[at];
        if b < 0x80 {
            out.push(ASCII_MAP[b as usize], at);
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
        out.make_room(buf.len() + (bytes.len() - at));
        // Combining marks and the like come out empty and vanish without breaking the word.
        for b in buf.bytes() {
            out.push(if b < 0x80 { ASCII_MAP[b as usize] } else { 0 }, at);
        }
        at += c.len_utf8();
    }
    out.finish()
}

/// Bytes per SWAR lane: one `u64`.
const LANE: usize = 8;
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte: set in a lane when some byte is not ASCII, and the bit each
/// per-byte test below answers in.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Per byte of an all-ASCII lane, the high bit set when the byte is `>= lo`. `lo` must be
/// at most 0x80: then `(byte | 0x80) - lo` cannot borrow from the next byte, and it keeps
/// its high bit exactly when `byte >= lo`.
fn at_least(x: u64, lo: u8) -> u64 {
    ((x | HIGH) - ONES * u64::from(lo)) & HIGH
}

/// Per byte of an all-ASCII lane, the high bit set when `lo <= byte <= hi`.
fn within(x: u64, lo: u8, hi: u8) -> u64 {
    at_least(x, lo) & !at_least(x, hi + 1)
}

/// The high bits of a lane's bytes gathered into the low eight bits (byte i → bit i). Each
/// high bit is moved by its own power of two of the multiplier; no two products land on the
/// same bit, so nothing carries.
fn gather(high_bits: u64) -> u32 {
    ((high_bits >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

/// Bits set in each byte value. `count_ones` is a software sequence with a multiplication
/// on x86-64 builds without the `popcnt` feature (the default target); the lane counts the
/// bits of a byte at each word start.
const BITS_SET: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).count_ones() as u8;
        b += 1;
    }
    t
};

/// The normalized text being written, with its word starts and origins.
struct Out {
    /// Written by index, at least [`LANE`] bytes of slack after `len`, so a lane is stored
    /// whole. ASCII input never grows; transliteration may (`ﬃ` → `ffi`) and makes room
    /// first ([`Out::make_room`]).
    ///
    /// Invariant at the top of `normalize`'s loop, which keeps every write in bounds:
    /// `text.len() >= len + (input bytes left) + LANE`.
    text: Vec<u8>,
    /// Bytes of `text` written so far; what lies after is scratch.
    len: usize,
    /// [`Normalized::words`], pushed as words start.
    words: Vec<u32>,
    /// [`Normalized::origins`], pushed as words start, the end moved as they go on.
    origins: Vec<(u32, u32)>,
    /// True when the last byte written is a space (or nothing was written yet), so runs of
    /// breaks collapse and no leading space appears.
    at_break: bool,
}

impl Out {
    fn new(input_len: usize) -> Out {
        // News words average six letters and a space; a guess, not a bound: `push` grows.
        let words = input_len / 5 + 2;
        Out {
            text: vec![0; input_len + LANE],
            len: 0,
            words: Vec::with_capacity(words),
            origins: Vec::with_capacity(words),
            at_break: true,
        }
    }

    /// Room for `more` bytes of output after `len`, plus a lane's slack.
    fn make_room(&mut self, more: usize) {
        let need = self.len + more + LANE;
        if need > self.text.len() {
            self.text.resize(need, 0);
        }
    }

    /// One output byte from input position `at`: a letter or digit (already lower-cased),
    /// or 0 for a break.
    fn push(&mut self, m: u8, at: usize) {
        let at = at as u32;
        if m != 0 {
            if self.at_break {
                self.words.push(self.len as u32);
                self.origins.push((at, at));
            } else if let Some(last) = self.origins.last_mut() {
                last.1 = at;
            }
            self.text[self.len] = m;
            self.len += 1;
            self.at_break = false;
        } else if !self.at_break {
            self.text[self.len] = b' ';
            self.len += 1;
            self.at_break = true;
        }
    }

    /// Eight ASCII bytes from input position `at`, as [`Out::push`] of each would write
    /// them, with no branch per byte: the classes of all eight are computed at once, the
    /// lane is stored whole unless a run of breaks must collapse, and words are recorded
    /// per word from bit masks, not per byte.
    fn ascii_lane(&mut self, x: u64, at: usize) {
        // Lower-case: 'A'..='Z' get 0x20 (the high bit moved down two places).
        let lower = x | (within(x, b'A', b'Z') >> 2);
        let word = within(lower, b'a', b'z') | within(x, b'0', b'9');
        let word_bytes = (word >> 7) * 0xff;
        let lane = (lower & word_bytes) | ((ONES * u64::from(b' ')) & !word_bytes);
        // Bit i: byte i is in a word / the byte before it is.
        let m = gather(word);
        let before = ((m << 1) | u32::from(!self.at_break)) & 0xff;
        // A break is written only right after a word byte.
        let keep = m | before;
        let starts = m & !before;
        let ends = m & !(m >> 1);
        let len = self.len;
        if keep == 0xff {
            self.text[len..len + LANE].copy_from_slice(&lane.to_le_bytes());
            self.len += LANE;
        } else {
            for (i, b) in lane.to_le_bytes().into_iter().enumerate() {
                self.text[self.len] = b;
                self.len += ((keep >> i) & 1) as usize;
            }
        }
        let first_new = self.words.len();
        let mut s = starts;
        while s != 0 {
            let i = s.trailing_zeros();
            let written_before = usize::from(BITS_SET[(keep & ((1 << i) - 1)) as usize]);
            self.words.push((len + written_before) as u32);
            self.origins.push((at as u32 + i, at as u32 + i));
            s &= s - 1;
        }
        // A word byte followed by a break (or the lane's last word byte: the word may go
        // on, and then a later lane moves its end again). Words alternate start, end, so
        // the ends belong in order to the words started here, after the one from before
        // this lane when the lane opens inside it.
        let open_word = (m & !starts & 1) as usize;
        let mut word = first_new + 1 - open_word;
        let mut e = ends;
        while e != 0 {
            let i = e.trailing_zeros();
            self.origins[word - 1].1 = at as u32 + i;
            word += 1;
            e &= e - 1;
        }
        self.at_break = m & 0x80 == 0;
    }

    fn finish(mut self) -> Normalized {
        if self.len > 0 && self.text[self.len - 1] == b' ' {
            self.len -= 1;
        }
        self.text.truncate(self.len);
        Normalized {
            // Only bytes of `[a-z0-9 ]` were written.
            text: String::from_utf8(self.text).expect("normalized text is ASCII"),
            words: self.words,
            origins: self.origins,
        }
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

    /// Random mixes of the characters each path treats differently, so that words,
    /// breaks and non-ASCII characters fall at every place of an eight-byte lane.
    #[test]
    fn lanes_agree_with_one_char_at_a_time_wherever_words_fall() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "aZz09AM ,.-'\n\t`@[{/:éÉ\u{301}ﬁ Тқ’—".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.gen_range(0..40);
            let t: String = (0..n)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let (a, b) = (normalize(&t), one_char_at_a_time(&t));
            assert_eq!(a.text, b.text, "{t:?}");
            let origins: Vec<(u32, u32)> = a
                .word_ranges()
                .map(|(s, e)| (b.offsets[s], b.offsets[e - 1]))
                .collect();
            assert_eq!(a.origins, origins, "{t:?}");
        }
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
