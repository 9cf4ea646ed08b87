//! Letter combinations: obfuscated words (`V1@gr@`), invisible characters inside words,
//! mixed scripts in one word (homoglyphs), shouting and punctuation runs, and gibberish
//! (character sequences no language makes). Each finding is a named symbol; the policy that
//! uses them decides the scores.

use crate::hooks::contract::Message;

/// One finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub name: &'static str,
    /// How many times it was seen.
    pub count: usize,
    /// An example (the first word that triggered it).
    pub example: String,
}

/// Characters used in place of letters (leetspeak), and the letter each stands for. `+` and
/// `|` join words far more often than they stand in for `t` and `l` (`DVD+RW`, `sh|file`).
fn deleet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        _ => return None,
    })
}

fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}' | '\u{180E}'
    )
}

#[derive(PartialEq, Clone, Copy)]
enum Script {
    Latin,
    Cyrillic,
    Greek,
    Other,
}

fn script(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    Some(match c as u32 {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F => Script::Latin,
        0x370..=0x3FF => Script::Greek,
        0x400..=0x4FF => Script::Cyrillic,
        _ => Script::Other,
    })
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u' | 'y')
}

struct Tally(Vec<Finding>);

impl Tally {
    fn hit(&mut self, name: &'static str, example: &str) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.count += 1,
            None => self.0.push(Finding {
                name,
                count: 1,
                example: example.chars().take(40).collect(),
            }),
        }
    }
}

/// A Latin word in disguise: plain letters once leetspeak is undone, with a substitution
/// between letters (`V1@gr@`, `c1al1s`, `m0rtgage`). What only looks like one is not:
/// - a number with a unit or an ordinal (`10GB`, `400MHz`, `17th`): the substitution must
///   have a letter on each side;
/// - a product code (`DVD100i`, `P45s`, `MP3s`): a run of two or more digits is a number,
///   not letters, and a word in disguise still reads as one word once undone (all lower
///   case, Capitalised, or ALL CAPS: `MPEs` is none of them);
/// - other scripts (`10月5日`): leetspeak stands in for Latin letters only;
/// - an address, `e-mail`, punctuation at a word's end (`win!`, `$100`).
fn obfuscated(word: &str) -> bool {
    // Punctuation around a word ("online!!!", "$100", "NEW!!") is emphasis, not disguise: the
    // punctuation-run symbols count it.
    let word = word.trim_matches(|c: char| !c.is_alphanumeric());
    // Leetspeak stands in for ASCII letters with ASCII characters; most words are plain
    // letters and stop here, before anything is counted (this runs for every body word).
    let b = word.as_bytes();
    if !word.is_ascii() || b.iter().all(u8::is_ascii_alphabetic) || !(4..=20).contains(&b.len()) {
        return false;
    }
    // An address ("newsletter@example", or cut short: "forteana@y") is not a word in
    // disguise; `vi@gra` has two letters before its `@`.
    if let Some((local, _)) = word.split_once('@')
        && local.bytes().filter(u8::is_ascii_alphabetic).count() >= 3
        && local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
    {
        return false;
    }
    // Every character an ASCII letter or a stand-in for one.
    if !b
        .iter()
        .all(|&c| c.is_ascii_alphabetic() || deleet(char::from(c)).is_some())
    {
        return false;
    }
    let mut letters = b.iter().copied().filter(u8::is_ascii_alphabetic);
    let n = letters.clone().count();
    if n < 2 || n * 2 < b.len() {
        return false;
    }
    // A number, or a hexadecimal one (`C0C0C0`, `1E0E`).
    if b.windows(2).any(|w| w[0].is_ascii_digit() && w[1].is_ascii_digit()) || b.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let first = letters.next().unwrap_or_default();
    // Lower case or Capitalised; or ALL CAPS.
    let lower = letters.clone().all(|c| c.is_ascii_lowercase());
    let caps = first.is_ascii_uppercase() && letters.all(|c| c.is_ascii_uppercase());
    // A run of stand-ins with a letter on each side. In capitals, digits and `!` between
    // letters are codes and names (`PERL5LIB`, `WC1R`, `NEW!CNET`); `@` and `$` still count.
    let mut inside = false;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphabetic() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let counts = !caps || b[start..i].iter().any(|c| matches!(c, b'@' | b'$'));
        inside |= start > 0 && i < b.len() && counts;
    }
    inside && (lower || caps)
}

/// Runs the letter analyses over the subject and body text.
pub fn analyze(m: &Message) -> Vec<Finding> {
    let mut t = Tally(Vec::new());
    for (text, in_subject) in [(m.subject.as_str(), true), (m.text.as_str(), false)] {
        let mut gibberish_words = 0usize;
        let mut long_words = 0usize;
        for raw in text.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '(' | ')' | '"' | '<' | '>'))
        {
            let word = raw.trim_matches(|c: char| matches!(c, '.' | '?' | '\''));
            if word.is_empty() {
                continue;
            }
            if obfuscated(word) {
                t.hit(
                    if in_subject {
                        "OBFUSCATED_SUBJECT"
                    } else {
                        "OBFUSCATED_WORD"
                    },
                    word,
                );
            }
            let visible: String = word.chars().filter(|c| !invisible(*c)).collect();
            if visible.len() != word.len() && visible.chars().any(char::is_alphabetic) {
                t.hit("INVISIBLE_CHARS", &visible);
            }
            let scripts: Vec<Script> = visible.chars().filter_map(script).collect();
            let latin = scripts.contains(&Script::Latin);
            if latin && (scripts.contains(&Script::Cyrillic) || scripts.contains(&Script::Greek)) {
                t.hit("MIXED_SCRIPTS", &visible);
            }
            let lower = visible.to_lowercase();
            if lower.chars().count() >= 8 && lower.chars().all(|c| c.is_ascii_lowercase()) {
                long_words += 1;
                let mut run = 0;
                let mut max_run = 0;
                for c in lower.chars() {
                    run = if is_vowel(c) { 0 } else { run + 1 };
                    max_run = max_run.max(run);
                }
                let vowels = lower.chars().filter(|c| is_vowel(*c)).count();
                if max_run >= 6 || vowels * 6 < lower.len() {
                    gibberish_words += 1;
                }
            }
        }
        if !in_subject && long_words >= 10 && gibberish_words * 5 >= long_words {
            t.hit(
                "GIBBERISH_TEXT",
                &format!("{gibberish_words} of {long_words} long words"),
            );
        }
        for run in ["!!!", "???", "$$$", "***", "!!1"] {
            if text.contains(run) {
                t.hit(if in_subject { "PUNCT_RUN_SUBJECT" } else { "PUNCT_RUN" }, run);
            }
        }
    }
    let letters: Vec<char> = m.subject.chars().filter(|c| c.is_alphabetic()).collect();
    let upper = letters.iter().filter(|c| c.is_uppercase()).count();
    if letters.len() >= 10 && upper * 10 >= letters.len() * 8 {
        t.hit("CAPS_SUBJECT", &m.subject);
    }
    t.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(subject: &str, text: &str) -> Vec<&'static str> {
        let m = Message {
            subject: subject.into(),
            text: text.into(),
            ..Message::default()
        };
        analyze(&m).into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn each_symbol_fires_and_stays_quiet_on_clean_text() {
        let clean = "Hi Bob, the meeting moved to Thursday at 10:00. See the agenda at example.org. Thanks!";
        assert!(
            names("Meeting moved", clean).is_empty(),
            "{:?}",
            names("Meeting moved", clean)
        );
        assert!(names("Cheap V1@gr@ here", clean).contains(&"OBFUSCATED_SUBJECT"));
        assert!(names("x", "buy c1al1s and v!agra now").contains(&"OBFUSCATED_WORD"));
        assert!(!names("x", "call 555-1234 or e-mail, win $100!").contains(&"OBFUSCATED_WORD"));
        assert!(!names("NEW!! online!!!", "write to newsletter@example now!!").contains(&"OBFUSCATED_WORD"));
        assert!(!names("NEW!! online!!!", clean).contains(&"OBFUSCATED_SUBJECT"));
        assert!(names("x", "cheap vi@gra and c@sino").contains(&"OBFUSCATED_WORD"));
        assert!(names("x", "VI@GRA and m0rtgage").contains(&"OBFUSCATED_WORD"));
        assert!(names("x", "V!agra").contains(&"OBFUSCATED_WORD"));
        // Numbers with units, ordinals, product codes and other scripts only look like it.
        for plain in [
            "a 10GB disk at 400MHz",
            "the 17th",
            "7200rpm",
            "MP3s and P45s",
            "the DVD100i",
            "DAVC450",
            "10月5日に",
            "Win2000 and B2B",
            "DVD+RW",
            "sh|file",
            "NEW!CNET",
            "PERL5LIB",
            "#C0C0C0",
            "forteana@y",
        ] {
            assert!(!names("x", plain).contains(&"OBFUSCATED_WORD"), "{plain}");
        }
        assert!(names("x", "free m\u{200B}oney").contains(&"INVISIBLE_CHARS"));
        assert!(names("x", "your p\u{0430}ypal account").contains(&"MIXED_SCRIPTS"));
        assert!(names("ACT NOW AND WIN BIG", clean).contains(&"CAPS_SUBJECT"));
        assert!(names("Win!!!", clean).contains(&"PUNCT_RUN_SUBJECT"));
        let gibberish = "qwrtzpkl xzvbnmkq plkjhgtr mnbvcxzq wqrtypsd zxcvbnmq lkjhgfds poiuytrq \
                         mnbvcxzl qwrtypsdf asdfghjk zxcvbnml";
        assert!(names("x", gibberish).contains(&"GIBBERISH_TEXT"));
        let english = "understanding everything requires patience, dedication, remarkable persistence \
                       throughout difficult situations whenever circumstances challenge expectations \
                       beautifully";
        assert!(
            !names("x", english).contains(&"GIBBERISH_TEXT"),
            "{:?}",
            names("x", english)
        );
    }
}
