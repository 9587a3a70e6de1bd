//! Spending limits: `max_cost_usd` and `max_tokens` on a task (over all its attempts) and on the
//! run (`<Workflow max_cost_usd=.. max_tokens=..>`), checked before every attempt and as an
//! agent reports usage while it works.
//!
//! Exceeding one fails the task, or with `<Workflow on_budget=Park>` parks the run as
//! `waiting-budget`. Either way the reason names the budget, what was spent and how to raise it:
//! `smithers budget RUN --add 5` (or `--add-tokens N`, `--task ID`), then `resume`.
//!
//! Tokens are input plus output tokens. Cost is what the agents reported plus what the price
//! catalog estimated; an attempt whose model has no price adds its tokens but no cost (its cost
//! shows as "no price" in `smithers status`), so set `max_tokens` too when the models may be
//! unpriced.

use serde::{Deserialize, Serialize};

use crate::model::Usage;

/// Limits on what a task or a run may spend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Most US dollars, reported or estimated.
    pub max_cost_usd: Option<f64>,
    /// Most input plus output tokens.
    pub max_tokens: Option<u64>,
}

impl Budget {
    /// Whether it sets no limit.
    pub fn is_unlimited(&self) -> bool {
        self.max_cost_usd.is_none() && self.max_tokens.is_none()
    }
}

/// What happens when a budget is exceeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OnBudget {
    /// The task fails (the run fails unless the task has `continue_on_fail`).
    #[default]
    Fail,
    /// The run stops as `waiting-budget`, its tasks pending: raise the budget and `resume`.
    Park,
}

/// What has been spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    /// US dollars (reported or estimated).
    pub cost_usd: f64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Attempts counted.
    pub attempts: u32,
}

impl Spent {
    /// Adds one attempt's usage (its `cost_usd` reported or estimated); an attempt that used
    /// nothing is not counted.
    pub fn add(&mut self, usage: &Usage) {
        if *usage == Usage::default() {
            return;
        }
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
        self.tokens += usage.input_tokens.unwrap_or(0) + usage.output_tokens.unwrap_or(0);
        self.attempts += 1;
    }

    /// `self` plus the usage an attempt has reported so far.
    pub fn with(mut self, usage: &Usage) -> Spent {
        self.add(usage);
        self
    }
}

/// An allowance added to a budget by `smithers budget RUN --add ..`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetRaise {
    /// The task whose budget it raises, or `None` for the run's.
    pub node_id: Option<String>,
    /// Added US dollars.
    pub add_usd: f64,
    /// Added tokens.
    pub add_tokens: u64,
}

/// Which budget, for messages: `run`, or `task `fix``.
pub(crate) fn exceeded(
    scope: &str,
    budget: &Budget,
    raised_usd: f64,
    raised_tokens: u64,
    spent: &Spent,
    run_id: &str,
    task: Option<&str>,
) -> Option<String> {
    let task_flag = task.map_or_else(String::new, |t| format!(" --task {t}"));
    if let Some(max) = budget.max_cost_usd {
        let limit = max + raised_usd;
        if spent.cost_usd >= limit {
            return Some(format!(
                "{scope} budget exceeded: max_cost_usd ${limit:.4}{}, spent ${:.4} over {} attempt(s); \
                 raise it with `smithers budget {run_id}{task_flag} --add 5`, then `resume`",
                raised(raised_usd > 0.0, &format!("${max:.4}")),
                spent.cost_usd,
                spent.attempts
            ));
        }
    }
    if let Some(max) = budget.max_tokens {
        let limit = max + raised_tokens;
        if spent.tokens >= limit {
            return Some(format!(
                "{scope} budget exceeded: max_tokens {limit}{}, spent {} tokens over {} attempt(s); \
                 raise it with `smithers budget {run_id}{task_flag} --add-tokens {}`, then `resume`",
                raised(raised_tokens > 0, &max.to_string()),
                spent.tokens,
                spent.attempts,
                max.max(1000)
            ));
        }
    }
    None
}

fn raised(yes: bool, base: &str) -> String {
    if yes {
        format!(" ({base} raised with `smithers budget`)")
    } else {
        String::new()
    }
}
