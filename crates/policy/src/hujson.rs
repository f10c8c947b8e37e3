//! HuJSON (JSON with `//` and `/* */` comments and trailing commas) read into a tree whose every
//! value knows its line and column, so that a policy's mistakes can be pointed at.

use std::fmt;

/// Where a value starts: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    /// The number as written.
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in order; a key's position is its own.
    Object(Vec<(Pos, String, Value)>),
}

impl Kind {
    /// What the value is, for messages ("a string").
    pub fn what(&self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool(_) => "true or false",
            Kind::Number(_) => "a number",
            Kind::String(_) => "a string",
            Kind::Array(_) => "a list",
            Kind::Object(_) => "an object",
        }
    }
}

/// A syntax error and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {reason}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub reason: String,
}

/// How deep lists and objects may nest.
const MAX_DEPTH: usize = 64;

/// Reads a whole HuJSON document.
pub fn parse(text: &str) -> Result<Value, SyntaxError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        at: 0,
        pos: Pos { line: 1, col: 1 },
    };
    p.skip_space()?;
    let v = p.value(0)?;
    p.skip_space()?;
    if p.peek().is_some() {
        return Err(p.error("unexpected text after the end of the document"));
    }
    Ok(v)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    pos: Pos,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.col = 1;
        } else {
            self.pos.col += 1;
        }
        Some(c)
    }

    fn error(&self, reason: impl Into<String>) -> SyntaxError {
        SyntaxError {
            pos: self.pos,
            reason: reason.into(),
        }
    }

    /// Skips white space and comments.
    fn skip_space(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\n' | '\r' | '\u{feff}') => {
                    self.bump();
                }
                Some('/') => {
                    let start = self.pos;
                    self.bump();
                    match self.bump() {
                        Some('/') => {
                            while self.peek().is_some_and(|c| c != '\n') {
                                self.bump();
                            }
                        }
                        Some('*') => loop {
                            match self.bump() {
                                Some('*') if self.peek() == Some('/') => {
                                    self.bump();
                                    break;
                                }
                                Some(_) => {}
                                None => {
                                    return Err(SyntaxError {
                                        pos: start,
                                        reason: "a /* comment is never closed".into(),
                                    })
                                }
                            }
                        },
                        _ => {
                            return Err(SyntaxError {
                                pos: start,
                                reason: "a lone '/': comments start with // or /*".into(),
                            })
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("lists and objects nest too deeply"));
        }
        let pos = self.pos;
        let kind = match self.peek() {
            None => return Err(self.error("the document ends where a value should be")),
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Kind::String(self.string()?),
            Some('t') => self.word("true", Kind::Bool(true))?,
            Some('f') => self.word("false", Kind::Bool(false))?,
            Some('n') => self.word("null", Kind::Null)?,
            Some(c) if c == '-' || c.is_ascii_digit() => Kind::Number(self.number()?),
            Some(c) => return Err(self.error(format!("unexpected {c:?} where a value should be"))),
        };
        Ok(Value { pos, kind })
    }

    fn word(&mut self, w: &str, kind: Kind) -> Result<Kind, SyntaxError> {
        let start = self.pos;
        for expected in w.chars() {
            if self.bump() != Some(expected) {
                return Err(SyntaxError {
                    pos: start,
                    reason: format!("unknown word: did you mean {w}? (strings need quotes)"),
                });
            }
        }
        Ok(kind)
    }

    fn number(&mut self) -> Result<String, SyntaxError> {
        let mut s = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                s.push(c);
                self.bump();
            } else {
                break;
            }
        }
        if s.parse::<f64>().is_err() {
            return Err(self.error(format!("{s:?} is not a number")));
        }
        Ok(s)
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => {
                    return Err(SyntaxError {
                        pos: start,
                        reason: "a string is never closed".into(),
                    })
                }
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape()?),
                Some(c) if (c as u32) < 0x20 => {
                    return Err(self.error("a control character inside a string"))
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, SyntaxError> {
        Ok(match self.bump() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('/') => '/',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('u') => {
                let hi = self.hex4()?;
                if (0xd800..0xdc00).contains(&hi) {
                    if self.bump() != Some('\\') || self.bump() != Some('u') {
                        return Err(self.error("a lone surrogate in a \\u escape"));
                    }
                    let lo = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&lo) {
                        return Err(self.error("a lone surrogate in a \\u escape"));
                    }
                    let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    char::from_u32(c).ok_or_else(|| self.error("a bad \\u escape"))?
                } else {
                    char::from_u32(hi)
                        .ok_or_else(|| self.error("a lone surrogate in a \\u escape"))?
                }
            }
            _ => return Err(self.error("an unknown escape in a string")),
        })
    }

    fn hex4(&mut self) -> Result<u32, SyntaxError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .bump()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| self.error("\\u needs four hex digits"))?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn array(&mut self, depth: usize) -> Result<Kind, SyntaxError> {
        self.bump();
        let mut items = Vec::new();
        loop {
            self.skip_space()?;
            if self.peek() == Some(']') {
                self.bump();
                return Ok(Kind::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {}
                _ => return Err(self.error("expected ',' or ']' after a list item")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Kind, SyntaxError> {
        self.bump();
        let mut members: Vec<(Pos, String, Value)> = Vec::new();
        loop {
            self.skip_space()?;
            match self.peek() {
                Some('}') => {
                    self.bump();
                    return Ok(Kind::Object(members));
                }
                Some('"') => {}
                _ => return Err(self.error("expected a quoted key or '}'")),
            }
            let key_pos = self.pos;
            let key = self.string()?;
            if members.iter().any(|(_, k, _)| *k == key) {
                return Err(SyntaxError {
                    pos: key_pos,
                    reason: format!("{key:?} appears twice in this object"),
                });
            }
            self.skip_space()?;
            if self.bump() != Some(':') {
                return Err(self.error("expected ':' after a key"));
            }
            self.skip_space()?;
            let v = self.value(depth + 1)?;
            members.push((key_pos, key, v));
            self.skip_space()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {}
                _ => return Err(self.error("expected ',' or '}' after a member")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_are_fine() {
        let v = parse(
            "{\n // a comment\n \"a\": [1, 2,], /* block\n comment */ \"b\": \"x\\u00e9\",\n}",
        )
        .unwrap();
        let Kind::Object(m) = v.kind else { panic!() };
        assert_eq!(m[0].1, "a");
        assert_eq!(m[0].0, Pos { line: 3, col: 2 });
        assert_eq!(m[1].2.kind, Kind::String("xé".into()));
        assert_eq!(m[1].2.pos, Pos { line: 4, col: 18 });
    }

    #[test]
    fn errors_say_where() {
        let e = parse("{\n  \"a\": [1 2]\n}").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 11 });
        assert!(e.reason.contains("','"), "{e}");
        let e = parse("{\"a\": tru}").unwrap_err();
        assert_eq!(e.pos.col, 7);
        assert!(parse("{\"a\": 1, \"a\": 2}")
            .unwrap_err()
            .reason
            .contains("twice"));
        assert!(parse("/* open").is_err());
        assert!(parse("\"abc").is_err());
        assert!(parse("[1] x").is_err());
        assert!(parse(&"[".repeat(100))
            .unwrap_err()
            .reason
            .contains("deeply"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_an_answer_not_a_panic(s in "\\PC{0,64}") {
            let _ = parse(&s);
        }

        #[test]
        fn plain_json_reads_as_serde_json_reads_it(v in proptest::collection::vec("[a-z]{0,5}", 0..5)) {
            let text = serde_json_text(&v);
            let parsed = parse(&text).unwrap();
            let Kind::Array(items) = parsed.kind else { panic!() };
            let got: Vec<String> = items.into_iter().map(|i| match i.kind { Kind::String(s) => s, _ => panic!() }).collect();
            proptest::prop_assert_eq!(got, v);
        }
    }

    fn serde_json_text(v: &[String]) -> String {
        let items: Vec<String> = v.iter().map(|s| format!("\"{s}\"")).collect();
        format!("[{}]", items.join(","))
    }
}
