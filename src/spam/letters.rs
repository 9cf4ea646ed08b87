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

/// Characters used in place of letters (leetspeak), and the letter each stands for.
fn deleet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' | '+' => 't',
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

/// A word that becomes plain letters once leetspeak is undone, with at least one
/// substitution inside it (not a number, not `e-mail`).
fn obfuscated(word: &str) -> bool {
    // Punctuation around a word ("online!!!", "$100", "NEW!!") is emphasis, not disguise: the
    // punctuation-run symbols count it.
    let word = word.trim_matches(|c: char| !c.is_alphanumeric());
    // An address ("newsletter@example") is not a word in disguise.
    if let Some((local, domain)) = word.split_once('@') {
        let letters = |s: &str| s.chars().filter(|c| c.is_alphabetic()).count();
        if !domain.contains('@') && letters(local) >= 3 && letters(domain) >= 3 {
            let only_letters = |s: &str| s.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if only_letters(local) && only_letters(domain) {
                return false;
            }
        }
    }
    let chars: Vec<char> = word.chars().collect();
    if chars.len() < 4 || chars.len() > 20 {
        return false;
    }
    let letters = chars.iter().filter(|c| c.is_alphabetic()).count();
    let subs = chars
        .iter()
        .filter(|c| !c.is_alphabetic() && deleet(**c).is_some())
        .count();
    if subs == 0 || letters < 2 || letters + subs != chars.len() {
        return false;
    }
    // A substitution at an end only ("win!", "$100") is punctuation, not disguise.
    let inner = chars[1..chars.len() - 1].iter().any(|c| !c.is_alphabetic());
    inner && letters * 2 >= chars.len()
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
