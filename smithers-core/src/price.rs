//! What tokens cost: a dated catalog of USD prices per million input, output, cache-read and
//! cache-write tokens for the Anthropic, OpenAI and Gemini models in common use, used to estimate
//! the cost of an attempt whose agent does not report one (Codex, Gemini, the HTTP agents).
//!
//! The built-in figures ([`PriceCatalog::builtin`]) are the providers' list prices as of
//! [`BUILTIN_PRICES_AS_OF`]; prices change, so override them from code
//! ([`PriceCatalog::set`]) or from a TOML file ([`PriceCatalog::load_toml`]):
//!
//! ```toml
//! as_of = "2026-12-01"
//!
//! [models."claude-sonnet-4-5"]
//! input = 3.0          # USD per million input tokens
//! output = 15.0
//! cache_read = 0.30
//! cache_write = 3.75
//! ```
//!
//! A model the catalog does not know has no price: the attempt's cost stays empty and is shown
//! as "no price", never as a silent zero.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{stored_names, Usage};

/// The date the built-in prices were taken from the providers' pricing pages.
pub const BUILTIN_PRICES_AS_OF: &str = "2025-11-24";

/// How a provider counts cache reads in `input_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputCounting {
    /// `input_tokens` excludes cache reads and writes, which are counted apart (Anthropic).
    Separate,
    /// `input_tokens` includes the cache reads, which are billed at the cache-read price
    /// instead (OpenAI, Gemini).
    IncludesCacheRead,
}

/// USD per million tokens of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Tokens read from the prompt cache; the input price when absent.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Tokens written to the prompt cache; the input price when absent.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// How `input_tokens` counts cache reads (default: by the model's name, `claude-*`
    /// separate, others included).
    #[serde(default)]
    pub input_counting: Option<InputCounting>,
    /// Prices above a prompt size (Gemini 2.5 Pro doubles its input price past 200 K tokens).
    #[serde(default)]
    pub long_context: Option<LongContextPrice>,
}

/// The prices of a model for prompts longer than `above_input_tokens`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContextPrice {
    /// The prompt size (input plus cache tokens) past which these prices apply.
    pub above_input_tokens: u64,
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cache reads.
    #[serde(default)]
    pub cache_read: Option<f64>,
}

impl ModelPrice {
    /// Input and output prices; cache tokens priced as input.
    pub fn new(input: f64, output: f64) -> Self {
        ModelPrice {
            input,
            output,
            cache_read: None,
            cache_write: None,
            input_counting: None,
            long_context: None,
        }
    }

    /// The cache-read price.
    #[must_use]
    pub fn cache_read(mut self, price: f64) -> Self {
        self.cache_read = Some(price);
        self
    }

    /// The cache-write price.
    #[must_use]
    pub fn cache_write(mut self, price: f64) -> Self {
        self.cache_write = Some(price);
        self
    }

    /// Prices past a prompt size.
    #[must_use]
    pub fn long_context(mut self, above_input_tokens: u64, input: f64, output: f64) -> Self {
        self.long_context = Some(LongContextPrice {
            above_input_tokens,
            input,
            output,
            cache_read: None,
        });
        self
    }

    fn check(&self, model: &str) -> Result<(), String> {
        let mut figures = vec![("input", Some(self.input)), ("output", Some(self.output))];
        figures.push(("cache_read", self.cache_read));
        figures.push(("cache_write", self.cache_write));
        if let Some(l) = &self.long_context {
            figures.push(("long_context.input", Some(l.input)));
            figures.push(("long_context.output", Some(l.output)));
            figures.push(("long_context.cache_read", l.cache_read));
        }
        for (name, value) in figures {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!(
                        "model `{model}`: `{name}` is {v}; a price is a number of US dollars per million tokens, 0 or more"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The cost of `usage` in USD, or `None` when it counts no tokens at all.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        let input = usage.input_tokens.unwrap_or(0);
        let output = usage.output_tokens.unwrap_or(0);
        let read = usage.cache_read_tokens.unwrap_or(0);
        let write = usage.cache_write_tokens.unwrap_or(0);
        if usage.input_tokens.is_none() && usage.output_tokens.is_none() && read == 0 && write == 0
        {
            return None;
        }
        let counting = self
            .input_counting
            .unwrap_or_else(|| default_counting(model));
        // Tokens billed at the plain input price.
        let (plain_input, prompt) = match counting {
            InputCounting::Separate => (input, input + read + write),
            InputCounting::IncludesCacheRead => (input.saturating_sub(read), input + write),
        };
        let (in_price, out_price, read_price) = match &self.long_context {
            Some(l) if prompt > l.above_input_tokens => (
                l.input,
                l.output,
                l.cache_read.or(self.cache_read).unwrap_or(l.input),
            ),
            _ => (
                self.input,
                self.output,
                self.cache_read.unwrap_or(self.input),
            ),
        };
        let write_price = self.cache_write.unwrap_or(in_price);
        let micro = plain_input as f64 * in_price
            + output as f64 * out_price
            + read as f64 * read_price
            + write as f64 * write_price;
        Some(micro / 1_000_000.0)
    }
}

fn default_counting(model: &str) -> InputCounting {
    if model.starts_with("claude") {
        InputCounting::Separate
    } else {
        InputCounting::IncludesCacheRead
    }
}

/// Prices by model name, with the date they were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceCatalog {
    as_of: String,
    models: BTreeMap<String, ModelPrice>,
}

/// The TOML form of a catalog file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    as_of: Option<String>,
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
}

stored_names! {
    /// Where a cost figure comes from.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum CostSource {
        /// The agent reported it (Claude Code's `total_cost_usd`).
        Reported = "reported",
        /// Computed from the tokens and the [`PriceCatalog`].
        Estimated = "estimated",
    }
}

impl Default for PriceCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PriceCatalog {
    /// An empty catalog: every model has no price.
    pub fn empty(as_of: impl Into<String>) -> Self {
        PriceCatalog {
            as_of: as_of.into(),
            models: BTreeMap::new(),
        }
    }

    /// The built-in list prices of the Anthropic, OpenAI and Gemini models in common use, as of
    /// [`BUILTIN_PRICES_AS_OF`] (USD per million tokens; Anthropic's cache write is the 5-minute
    /// one; OpenAI and Gemini bill cache writes as input).
    pub fn builtin() -> Self {
        let mut c = PriceCatalog::empty(BUILTIN_PRICES_AS_OF);
        let anthropic = |input: f64, output: f64| {
            ModelPrice::new(input, output)
                .cache_read(input / 10.0)
                .cache_write(input * 1.25)
        };
        for (name, p) in [
            ("claude-opus-4-5", anthropic(5.0, 25.0)),
            ("claude-opus-4-1", anthropic(15.0, 75.0)),
            ("claude-opus-4", anthropic(15.0, 75.0)),
            ("claude-sonnet-4-5", anthropic(3.0, 15.0)),
            ("claude-sonnet-4", anthropic(3.0, 15.0)),
            ("claude-3-7-sonnet", anthropic(3.0, 15.0)),
            ("claude-haiku-4-5", anthropic(1.0, 5.0)),
            ("claude-3-5-haiku", anthropic(0.8, 4.0)),
            (
                "claude-3-haiku",
                ModelPrice::new(0.25, 1.25)
                    .cache_read(0.03)
                    .cache_write(0.30),
            ),
            ("gpt-5.1", ModelPrice::new(1.25, 10.0).cache_read(0.125)),
            ("gpt-5", ModelPrice::new(1.25, 10.0).cache_read(0.125)),
            ("gpt-5-codex", ModelPrice::new(1.25, 10.0).cache_read(0.125)),
            ("gpt-5-mini", ModelPrice::new(0.25, 2.0).cache_read(0.025)),
            ("gpt-5-nano", ModelPrice::new(0.05, 0.40).cache_read(0.005)),
            ("gpt-4.1", ModelPrice::new(2.0, 8.0).cache_read(0.50)),
            ("gpt-4.1-mini", ModelPrice::new(0.40, 1.60).cache_read(0.10)),
            (
                "gpt-4.1-nano",
                ModelPrice::new(0.10, 0.40).cache_read(0.025),
            ),
            ("gpt-4o", ModelPrice::new(2.50, 10.0).cache_read(1.25)),
            ("gpt-4o-mini", ModelPrice::new(0.15, 0.60).cache_read(0.075)),
            ("o3", ModelPrice::new(2.0, 8.0).cache_read(0.50)),
            ("o4-mini", ModelPrice::new(1.10, 4.40).cache_read(0.275)),
            (
                "gemini-2.5-pro",
                ModelPrice {
                    long_context: Some(LongContextPrice {
                        above_input_tokens: 200_000,
                        input: 2.50,
                        output: 15.0,
                        cache_read: Some(0.625),
                    }),
                    ..ModelPrice::new(1.25, 10.0).cache_read(0.31)
                },
            ),
            (
                "gemini-2.5-flash",
                ModelPrice::new(0.30, 2.50).cache_read(0.075),
            ),
            (
                "gemini-2.5-flash-lite",
                ModelPrice::new(0.10, 0.40).cache_read(0.025),
            ),
            (
                "gemini-2.0-flash",
                ModelPrice::new(0.10, 0.40).cache_read(0.025),
            ),
        ] {
            c.models.insert(name.to_owned(), p);
        }
        c
    }

    /// The date the prices were taken.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// Sets (or replaces) the price of `model`.
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) -> &mut Self {
        self.models.insert(model.into(), price);
        self
    }

    /// Builder form of [`PriceCatalog::set`].
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.set(model, price);
        self
    }

    /// Overrides prices with those of a TOML text (`as_of = "..."` and `[models."name"]` tables
    /// with `input`, `output`, `cache_read`, `cache_write`); `origin` names it in errors.
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> crate::Result<()> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| {
            crate::Error::PriceCatalog(format!(
                "price catalog `{origin}` is not valid: {}; expected `as_of = \"YYYY-MM-DD\"` and \
                 `[models.\"<model>\"]` tables with `input`, `output` (USD per million tokens) and \
                 optionally `cache_read`, `cache_write`",
                e.to_string().trim()
            ))
        })?;
        for (model, price) in &file.models {
            price.check(model).map_err(|e| {
                crate::Error::PriceCatalog(format!("price catalog `{origin}`: {e}"))
            })?;
        }
        if let Some(as_of) = file.as_of {
            self.as_of = as_of;
        }
        self.models.extend(file.models);
        Ok(())
    }

    /// The built-in catalog overridden by the TOML file at `path`.
    pub fn load_toml(path: impl AsRef<Path>) -> crate::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::Error::PriceCatalog(format!(
                "cannot read the price catalog `{}`: {e}",
                path.display()
            ))
        })?;
        let mut c = Self::builtin();
        c.merge_toml(&text, &path.display().to_string())?;
        Ok(c)
    }

    /// The price of `model`: its own entry, or that of the name it extends with a date or
    /// version suffix (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`, `gpt-5@latest`,
    /// `claude-opus-4-5[1m]`, `models/gemini-2.5-pro`). `None` when unknown.
    pub fn price(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        let name = normalize(model);
        if let Some((k, p)) = self.models.get_key_value(name.as_str()) {
            return Some((k.as_str(), p));
        }
        self.models
            .iter()
            .filter(|(k, _)| name.strip_prefix(k.as_str()).is_some_and(is_version_suffix))
            .max_by_key(|(k, _)| k.len())
            .map(|(k, p)| (k.as_str(), p))
    }

    /// The estimated cost of `usage` for `model`, or `None` when the model has no price (or the
    /// usage counts no tokens).
    pub fn estimate(&self, model: &str, usage: &Usage) -> Option<f64> {
        let (name, price) = self.price(model)?;
        price.cost(name, usage)
    }

    /// The models it prices, sorted.
    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.models.iter().map(|(k, p)| (k.as_str(), p))
    }
}

/// Lowercase, without a provider prefix (`models/`, `anthropic/`) or a `[1m]`-style tag.
fn normalize(model: &str) -> String {
    let mut m = model.trim().to_ascii_lowercase();
    if let Some(i) = m.find('[') {
        m.truncate(i);
    }
    match m.rfind('/') {
        Some(i) => m[i + 1..].to_owned(),
        None => m,
    }
}

/// `-20250929`, `-2024-08-06`, `@…`, `-latest`: what a release adds to a model family's name.
fn is_version_suffix(rest: &str) -> bool {
    if rest.starts_with('@') || rest == "-latest" {
        return true;
    }
    let Some(date) = rest.strip_prefix('-') else {
        return false;
    };
    let digits: String = date.chars().filter(|c| *c != '-').collect();
    digits.len() == 8 && digits.chars().all(|c| c.is_ascii_digit()) && date.len() <= 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_sources_round_trip_under_their_stored_names() {
        crate::model::tests::check_stored_names(
            CostSource::ALL,
            &["reported", "estimated"],
            CostSource::as_str,
            CostSource::parse,
        );
    }

    fn usage(input: u64, output: u64, read: u64, write: u64) -> Usage {
        Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cache_read_tokens: Some(read),
            cache_write_tokens: Some(write),
            cost_usd: None,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn estimates_match_hand_computed_figures() {
        let c = PriceCatalog::builtin();
        // Anthropic counts cache tokens apart from input:
        // 1234 × $3 + 56 × $15 + 7 × $0.30 + 8 × $3.75 per million = $0.0045741.
        let e = c.estimate("claude-sonnet-4-5-20250929", &usage(1234, 56, 7, 8));
        assert!(close(e, 0.004_574_1), "{e:?}");
        // OpenAI's input includes the 7 cached tokens, billed at $0.125 instead of $1.25:
        // 1227 × 1.25 + 56 × 10 + 7 × 0.125 = 2094.625 micro-dollars.
        let e = c.estimate("gpt-5", &usage(1234, 56, 7, 0));
        assert!(close(e, 0.002_094_625), "{e:?}");
        // Gemini 2.5 Pro past 200 K prompt tokens: 250 000 × 2.50 + 1000 × 15 = $0.64.
        let e = c.estimate("gemini-2.5-pro", &usage(250_000, 1000, 0, 0));
        assert!(close(e, 0.64), "{e:?}");
        // ...and below it: 1227 × 1.25 + 56 × 10 + 7 × 0.31 = 2095.92 micro-dollars.
        let e = c.estimate("models/gemini-2.5-pro", &usage(1234, 56, 7, 0));
        assert!(close(e, 0.002_095_92), "{e:?}");
    }

    #[test]
    fn unknown_models_have_no_price_and_families_need_a_version_suffix() {
        let c = PriceCatalog::builtin();
        assert_eq!(c.estimate("claude-opus-4-8", &usage(1, 1, 0, 0)), None);
        assert_eq!(c.price("gpt-5-pro"), None, "not gpt-5's price");
        assert_eq!(c.price("gpt-4o-2024-08-06").map(|p| p.0), Some("gpt-4o"));
        assert_eq!(
            c.price("claude-opus-4-5[1m]").map(|p| p.0),
            Some("claude-opus-4-5")
        );
        assert_eq!(c.price("GPT-5-MINI").map(|p| p.0), Some("gpt-5-mini"));
        assert_eq!(c.estimate("gpt-5", &Usage::default()), None, "no tokens");
    }

    #[test]
    fn toml_overrides_and_adds_prices() {
        let mut c = PriceCatalog::builtin();
        c.merge_toml(
            "as_of = \"2026-12-01\"\n[models.\"claude-opus-4-8\"]\ninput = 5\noutput = 25\ncache_read = 0.5\ncache_write = 6.25\n[models.\"gpt-5\"]\ninput = 2\noutput = 20\n",
            "prices.toml",
        )
        .unwrap();
        assert_eq!(c.as_of(), "2026-12-01");
        // 1234 × 5 + 56 × 25 + 7 × 0.5 + 8 × 6.25 = 7623.5 micro-dollars.
        assert!(close(
            c.estimate("claude-opus-4-8", &usage(1234, 56, 7, 8)),
            0.007_623_5
        ));
        // No cache_read given: cached tokens at the input price. 1234 × 2 + 56 × 20 = 3588.
        assert!(close(
            c.estimate("gpt-5", &usage(1234, 56, 7, 0)),
            0.003_588
        ));
    }

    #[test]
    fn a_malformed_catalog_is_a_clear_error() {
        let check = |text: &str, needle: &str| {
            let mut c = PriceCatalog::builtin();
            let e = c.merge_toml(text, "prices.toml").unwrap_err().to_string();
            assert!(e.contains(needle), "{needle:?} not in: {e}");
            assert!(e.contains("prices.toml"), "{e}");
            assert_eq!(c, PriceCatalog::builtin(), "nothing half-applied");
        };
        check(
            "[models.\"x\"]\ninput = \"cheap\"\noutput = 1\n",
            "invalid type",
        );
        check("[models.\"x\"]\noutput = 1\n", "missing field `input`");
        check(
            "[models.\"x\"]\ninput = 1\noutput = 1\ncache_reed = 1\n",
            "unknown field `cache_reed`",
        );
        check(
            "[models.\"x\"]\ninput = -1\noutput = 1\n",
            "model `x`: `input` is -1",
        );
        check("models = 3", "invalid type");
    }
}
