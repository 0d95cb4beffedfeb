//! Conditional dependencies: an order's `depends` expression, such as
//! `build.succeeded && (lint.failed || lint.skipped)`.
//!
//! A term names an order (by order name or queue id: letters, digits, `_`, `-`) and an
//! outcome; `&&`, `||`, `!` and parentheses combine terms, `!` binding tightest and `&&`
//! tighter than `||`, as in most languages. The order waits until every order its
//! expression names has ended, then runs if the expression holds, else it is skipped.
//!
//! [`parse`] reads the expression as written (errors name their column); validation
//! resolves its names to order numbers ([`Expr::resolve`]), and the resolved expression is
//! what an order's row keeps ([`Condition`]), written canonically with order numbers
//! (`0001.succeeded && (0002.failed || 0002.skipped)`) beside the text as written, which
//! reasons quote.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{OrderNum, OrderStatus};

/// Most characters of a `depends` expression.
pub const MAX_EXPRESSION_CHARS: usize = 4096;

/// Most levels of `!` and parentheses an expression nests (readers recurse through them).
pub const MAX_NESTING: usize = 32;

/// Most terms in an expression: with the length and the nesting, this bounds how deep
/// readers recurse and how much memory an order's condition takes.
pub const MAX_TERMS: usize = 256;

/// Most characters of an expression as a row stores it: names become four-digit order
/// numbers and operators get spaces, so the stored form of a valid expression may be
/// longer than what was written (at most about 1.6 times).
const MAX_STORED_CHARS: usize = 2 * MAX_EXPRESSION_CHARS;

/// What a term asks of the order it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed,
    /// It timed out.
    TimedOut,
    /// It was skipped.
    Skipped,
    /// It was cancelled.
    Cancelled,
    /// It ended, however.
    Ended,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 6] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Skipped,
        Outcome::Cancelled,
        Outcome::Ended,
    ];

    /// The outcome as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
            Outcome::Ended => "ended",
        }
    }

    fn from_word(word: &str) -> Option<Outcome> {
        Outcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == word)
    }

    /// Whether an order with `status` has this outcome.
    pub fn holds_for(self, status: OrderStatus) -> bool {
        match self {
            Outcome::Succeeded => status == OrderStatus::Succeeded,
            Outcome::Failed => status == OrderStatus::Failed,
            Outcome::TimedOut => status == OrderStatus::TimedOut,
            Outcome::Skipped => status == OrderStatus::Skipped,
            Outcome::Cancelled => status == OrderStatus::Cancelled,
            Outcome::Ended => status.is_terminal(),
        }
    }
}

/// An expression over orders named by `N` (a reference as written, or an order number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr<N> {
    /// `<order>.<outcome>`.
    Term(N, Outcome),
    /// `!e`.
    Not(Box<Expr<N>>),
    /// `a && b`.
    And(Box<Expr<N>>, Box<Expr<N>>),
    /// `a || b`.
    Or(Box<Expr<N>>, Box<Expr<N>>),
}

impl<N> Expr<N> {
    /// Every order the expression names, in the order written (repeats included).
    pub fn names(&self) -> Vec<&N> {
        let mut names = Vec::new();
        let mut stack = vec![self];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::Term(name, _) => names.push(name),
                Expr::Not(inner) => stack.push(inner),
                Expr::And(a, b) | Expr::Or(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
            }
        }
        names
    }

    /// The same expression with each name replaced by what `resolve` makes of it.
    ///
    /// # Errors
    ///
    /// The first error `resolve` returns.
    pub fn resolve<M, E>(
        &self,
        resolve: &mut impl FnMut(&N) -> Result<M, E>,
    ) -> Result<Expr<M>, E> {
        Ok(match self {
            Expr::Term(name, outcome) => Expr::Term(resolve(name)?, *outcome),
            Expr::Not(inner) => Expr::Not(Box::new(inner.resolve(resolve)?)),
            Expr::And(a, b) => {
                Expr::And(Box::new(a.resolve(resolve)?), Box::new(b.resolve(resolve)?))
            }
            Expr::Or(a, b) => {
                Expr::Or(Box::new(a.resolve(resolve)?), Box::new(b.resolve(resolve)?))
            }
        })
    }

    /// Whether the expression holds, given each named order's status (`None`: unknown,
    /// which no outcome holds for).
    pub fn holds(&self, status: &impl Fn(&N) -> Option<OrderStatus>) -> bool {
        match self {
            Expr::Term(name, outcome) => status(name).is_some_and(|s| outcome.holds_for(s)),
            Expr::Not(inner) => !inner.holds(status),
            Expr::And(a, b) => a.holds(status) && b.holds(status),
            Expr::Or(a, b) => a.holds(status) || b.holds(status),
        }
    }

    /// How tightly the expression's top binds, for parentheses when printing.
    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(..) => 0,
            Expr::And(..) => 1,
            Expr::Not(_) | Expr::Term(..) => 2,
        }
    }
}

impl<N: fmt::Display> fmt::Display for Expr<N> {
    /// Canonically: single spaces around operators, parentheses only where needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operand = |f: &mut fmt::Formatter<'_>, e: &Expr<N>, min: u8| {
            if e.precedence() < min {
                write!(f, "({e})")
            } else {
                write!(f, "{e}")
            }
        };
        match self {
            Expr::Term(name, outcome) => write!(f, "{name}.{}", outcome.as_str()),
            Expr::Not(inner) => {
                f.write_str("!")?;
                operand(f, inner, 2)
            }
            Expr::And(a, b) => {
                operand(f, a, 1)?;
                f.write_str(" && ")?;
                operand(f, b, 2)
            }
            Expr::Or(a, b) => {
                operand(f, a, 0)?;
                f.write_str(" || ")?;
                operand(f, b, 1)
            }
        }
    }
}

/// Why an expression could not be read, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// The 1-based column (in characters) of the problem.
    pub column: usize,
    /// What is wrong there.
    pub message: String,
}

/// Reads an expression as written; names are the references as written.
///
/// # Errors
///
/// [`ParseError`] at the first character that does not fit the grammar of the module docs.
pub fn parse(text: &str) -> Result<Expr<String>, ParseError> {
    parse_within(text, MAX_EXPRESSION_CHARS)
}

/// [`parse`], for an expression of at most `max_chars` characters.
fn parse_within(text: &str, max_chars: usize) -> Result<Expr<String>, ParseError> {
    if text.chars().count() > max_chars {
        return Err(ParseError {
            column: max_chars + 1,
            message: format!("the expression is longer than {max_chars} characters"),
        });
    }
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
        depth: 0,
        terms: 0,
    };
    let expr = parser.or()?;
    parser.skip_spaces();
    match parser.peek() {
        None => Ok(expr),
        Some(')') => Err(parser.error("a `)` without its `(`")),
        Some(_) => Err(parser.error("expected `&&`, `||` or the end of the expression")),
    }
}

/// A recursive-descent parser over the expression's characters.
struct Parser {
    chars: Vec<char>,
    at: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError {
            column: self.at + 1,
            message: message.into(),
        }
    }

    /// Consumes `op` (two characters) if it comes next.
    fn eat(&mut self, op: &str) -> bool {
        self.skip_spaces();
        let ahead: String = self.chars.iter().skip(self.at).take(op.len()).collect();
        if ahead == op {
            self.at += op.len();
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr<String>, ParseError> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr<String>, ParseError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr<String>, ParseError> {
        self.skip_spaces();
        match self.peek() {
            Some('!') => {
                self.nest()?;
                self.at += 1;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Some('(') => {
                self.nest()?;
                let open = self.at;
                self.at += 1;
                let inner = self.or()?;
                self.skip_spaces();
                if self.peek() != Some(')') {
                    let mut error = self.error("expected `)`");
                    error.message = format!("expected `)` to close the `(` of column {}", open + 1);
                    return Err(error);
                }
                self.at += 1;
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.term(),
        }
    }

    fn nest(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!("nested deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    fn term(&mut self) -> Result<Expr<String>, ParseError> {
        let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let start = self.at;
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        if self.at == start {
            return Err(match self.peek() {
                None => self.error("expected a term such as `build.succeeded`, found the end"),
                Some(c) => self.error(format!(
                    "expected a term such as `build.succeeded`, found `{}`",
                    c.escape_default()
                )),
            });
        }
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(ParseError {
                column: start + 1,
                message: format!("more than {MAX_TERMS} terms"),
            });
        }
        let name: String = self.chars[start..self.at].iter().collect();
        if self.peek() != Some('.') {
            return Err(self.error(format!(
                "expected `.` and an outcome after `{name}` (`{name}.succeeded`, …)"
            )));
        }
        self.at += 1;
        let word_start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            self.at += 1;
        }
        let word: String = self.chars[word_start..self.at].iter().collect();
        match Outcome::from_word(&word) {
            Some(outcome) => Ok(Expr::Term(name, outcome)),
            None => Err(ParseError {
                column: word_start + 1,
                message: format!(
                    "unknown outcome `{}`: one of succeeded, failed, timed_out, skipped, cancelled, ended",
                    word.escape_default()
                ),
            }),
        }
    }
}

/// An order's condition, as its row keeps it: the expression as written (which reasons
/// quote) and resolved to order numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// The `depends` expression as written in the job.
    pub text: String,
    /// The expression with order numbers, written canonically.
    #[serde(serialize_with = "canonical", deserialize_with = "resolved")]
    pub expr: Expr<OrderNum>,
}

fn canonical<S: Serializer>(expr: &Expr<OrderNum>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(expr)
}

fn resolved<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Expr<OrderNum>, D::Error> {
    let text = String::deserialize(deserializer)?;
    let expr = parse_within(&text, MAX_STORED_CHARS).map_err(serde::de::Error::custom)?;
    expr.resolve(&mut |name: &String| name.parse::<OrderNum>())
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_of(text: &str) -> (usize, String) {
        let error = parse(text).unwrap_err();
        (error.column, error.message)
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let expr = parse("a.succeeded || !b.failed && (c.ended || d-1.timed_out)").unwrap();
        assert_eq!(
            expr.to_string(),
            "a.succeeded || !b.failed && (c.ended || d-1.timed_out)"
        );
        let Expr::Or(left, right) = &expr else {
            panic!("{expr:?}")
        };
        assert_eq!(**left, Expr::Term("a".into(), Outcome::Succeeded));
        assert!(matches!(**right, Expr::And(..)));
        assert_eq!(parse("((x.skipped))").unwrap().to_string(), "x.skipped");
        assert_eq!(
            parse("!(a.ended && b.ended)").unwrap().to_string(),
            "!(a.ended && b.ended)"
        );
        assert_eq!(
            parse("(a.failed || b.failed) && c.cancelled")
                .unwrap()
                .to_string(),
            "(a.failed || b.failed) && c.cancelled"
        );
    }

    #[test]
    fn errors_name_their_column() {
        assert_eq!(column_of("build.succeeded &&").0, 19);
        assert_eq!(column_of("build.succeded").0, 7);
        assert!(
            column_of("build.succeded")
                .1
                .contains("unknown outcome `succeded`")
        );
        assert_eq!(column_of("build").0, 6);
        assert_eq!(column_of("a.ended & b.ended").0, 9);
        assert_eq!(
            column_of("(a.ended").1,
            "expected `)` to close the `(` of column 1"
        );
        assert_eq!(column_of("a.ended)").1, "a `)` without its `(`");
        assert_eq!(column_of("").0, 1);
        assert_eq!(column_of("a.ended && build.sücceeded").0, 18);
        assert!(column_of(&"!".repeat(40)).1.contains("nested deeper"));
        assert!(parse(&format!("a.ended{}", " ".repeat(MAX_EXPRESSION_CHARS))).is_err());
    }

    #[test]
    fn holds_by_the_named_orders_statuses() {
        let expr = parse("build.succeeded && (lint.failed || lint.skipped)").unwrap();
        let with = |build, lint| {
            move |name: &String| match name.as_str() {
                "build" => Some(build),
                "lint" => Some(lint),
                _ => None,
            }
        };
        assert!(expr.holds(&with(OrderStatus::Succeeded, OrderStatus::Skipped)));
        assert!(expr.holds(&with(OrderStatus::Succeeded, OrderStatus::Failed)));
        assert!(!expr.holds(&with(OrderStatus::Succeeded, OrderStatus::TimedOut)));
        assert!(!expr.holds(&with(OrderStatus::Failed, OrderStatus::Failed)));
        let ended = parse("build.ended && !lint.cancelled").unwrap();
        assert!(ended.holds(&with(OrderStatus::TimedOut, OrderStatus::Succeeded)));
        assert!(!ended.holds(&with(OrderStatus::Running, OrderStatus::Succeeded)));
        assert_eq!(expr.names(), ["build", "lint", "lint"]);
    }

    #[test]
    fn a_condition_is_stored_canonically_with_order_numbers() {
        let expr = parse("b.succeeded&&!(a.failed||a.skipped)").unwrap();
        let mut nums = |name: &String| -> Result<OrderNum, ()> {
            Ok(OrderNum::from_index(usize::from(name == "b")))
        };
        let condition = Condition {
            text: "b.succeeded&&!(a.failed||a.skipped)".into(),
            expr: expr.resolve(&mut nums).unwrap(),
        };
        let json = serde_json::to_value(&condition).unwrap();
        assert_eq!(
            json["expr"],
            "0002.succeeded && !(0001.failed || 0001.skipped)"
        );
        let back: Condition = serde_json::from_value(json).unwrap();
        assert_eq!(back, condition);
    }

    /// The stored form is longer than the text (four-digit numbers, spaced operators): the
    /// longest valid expression of the shortest terms must still read back.
    #[test]
    fn the_longest_valid_condition_reads_back_as_stored() {
        let text = vec!["a.ended"; MAX_TERMS].join("||");
        assert!(text.len() <= MAX_EXPRESSION_CHARS);
        let expr = parse(&text).unwrap();
        let condition = Condition {
            text: text.clone(),
            expr: expr
                .resolve(&mut |_: &String| Ok::<_, ()>(OrderNum::from_index(0)))
                .unwrap(),
        };
        let json = serde_json::to_string(&condition).unwrap();
        assert!(condition.expr.to_string().len() > text.len());
        let back: Condition = serde_json::from_str(&json).unwrap();
        assert_eq!(back, condition);
        let too_many = vec!["a.ended"; MAX_TERMS + 1].join("||");
        assert!(
            parse(&too_many)
                .unwrap_err()
                .message
                .contains("more than 256 terms")
        );
    }
}
