//! Attribute arguments: `key = literal` pairs, checked against the keys a
//! macro accepts, with errors at the offending tokens.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, Lit, LitStr, Token};

/// Collects errors so that one expansion reports all of them.
#[derive(Default)]
pub(crate) struct Errors {
    error: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.error {
            Some(e) => e.combine(error),
            None => self.error = Some(error),
        }
    }

    pub(crate) fn spanned(&mut self, tokens: impl quote::ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One `key = value` argument.
pub(crate) struct Arg {
    pub(crate) key: Ident,
    pub(crate) value: Lit,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!("expected `{key} = <value>`: arguments are written as `key = value`"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(Self { key, value })
    }
}

/// Parses `key = value, ...`.
pub(crate) fn parse_args(tokens: TokenStream) -> syn::Result<Vec<Arg>> {
    let args = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(args.into_iter().collect())
}

/// Checks the keys: each known, none repeated. Returns the known ones.
pub(crate) fn check_keys(args: Vec<Arg>, accepted: &[&str], errors: &mut Errors) -> Vec<Arg> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for arg in args {
        let key = arg.key.unraw().to_string();
        if !accepted.contains(&key.as_str()) {
            let list = accepted
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.spanned(
                &arg.key,
                format!("unknown argument `{key}`; the accepted arguments are {list}"),
            );
        } else if seen.contains(&key) {
            errors.spanned(&arg.key, format!("`{key}` given twice; give it once"));
        } else {
            seen.push(key);
            out.push(arg);
        }
    }
    out
}

pub(crate) fn key(arg: &Arg) -> String {
    arg.key.unraw().to_string()
}

/// A non-empty string literal without `/`, for names and ids.
pub(crate) fn name_value(arg: &Arg, what: &str, errors: &mut Errors) -> Option<LitStr> {
    match &arg.value {
        Lit::Str(s) if s.value().is_empty() => {
            errors.spanned(s, format!("the {what} must not be empty"));
            None
        }
        Lit::Str(s) if s.value().contains('/') => {
            errors.spanned(s, format!("the {what} must not contain `/`"));
            None
        }
        Lit::Str(s) if s.value().starts_with('$') => {
            errors.spanned(s, format!("the {what} must not start with `$`"));
            None
        }
        Lit::Str(s) => Some(s.clone()),
        other => {
            errors.spanned(
                other,
                format!("the {what} must be a string literal, such as `\"my-{what}\"`"),
            );
            None
        }
    }
}

/// The `crate = "path"` argument.
pub(crate) fn crate_path(arg: &Arg, errors: &mut Errors) -> Option<syn::Path> {
    match &arg.value {
        Lit::Str(s) => match s.parse::<syn::Path>() {
            Ok(path) => Some(path),
            Err(_) => {
                errors.spanned(
                    s,
                    "`crate` must name a path, such as `\"::my_crate::agent_workflows\"`",
                );
                None
            }
        },
        other => {
            errors.spanned(other, "`crate` must be a string literal naming a path");
            None
        }
    }
}

/// A positive integer literal.
pub(crate) fn positive_int(arg: &Arg, errors: &mut Errors) -> Option<u32> {
    match &arg.value {
        Lit::Int(i) => match i.base10_parse::<u32>() {
            Ok(0) | Err(_) => {
                errors.spanned(
                    i,
                    format!("`{}` must be an integer from 1 to {}", key(arg), u32::MAX),
                );
                None
            }
            Ok(n) => Some(n),
        },
        other => {
            errors.spanned(other, format!("`{}` must be an integer, such as `3`", key(arg)));
            None
        }
    }
}

/// A float literal of at least 1.0 (integers are accepted).
pub(crate) fn backoff(arg: &Arg, errors: &mut Errors) -> Option<f64> {
    let value = match &arg.value {
        Lit::Float(f) => f.base10_parse::<f64>().ok(),
        Lit::Int(i) => i.base10_parse::<u32>().ok().map(f64::from),
        _ => None,
    };
    match value {
        Some(v) if v.is_finite() && v >= 1.0 => Some(v),
        _ => {
            errors.spanned(
                &arg.value,
                "`backoff` must be a number of at least 1.0, such as `2.0`",
            );
            None
        }
    }
}

/// A duration literal such as `"500ms"`, `"2s"`, `"1m"` or `"1h"`.
pub(crate) fn duration(arg: &Arg, errors: &mut Errors) -> Option<Duration> {
    let parsed = match &arg.value {
        Lit::Str(s) => parse_duration(&s.value()),
        _ => None,
    };
    if parsed.is_none() {
        errors.spanned(
            &arg.value,
            format!(
                "`{}` must be a duration string: a whole number and a unit (`ms`, `s`, `m` or `h`), such as \"500ms\"",
                key(arg)
            ),
        );
    }
    parsed
}

pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    let millis = match text[digits..].trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("10 parsecs"), None);
    }

    #[test]
    fn unknown_and_repeated_keys() {
        let args = parse_args(quote::quote!(id = "a", idd = "b", id = "c")).unwrap();
        let mut errors = Errors::default();
        let kept = check_keys(args, &["id"], &mut errors);
        assert_eq!(kept.len(), 1);
        let message = errors
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            message,
            [
                "unknown argument `idd`; the accepted arguments are `id`",
                "`id` given twice; give it once"
            ]
        );
    }
}
