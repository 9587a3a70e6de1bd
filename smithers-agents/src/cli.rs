//! What the three CLI agents (Claude Code, Codex, Gemini) share: their common options, the builder
//! methods that set them, and the scratch files some flags need.
//!
//! Each agent keeps a [`CliOptions`] in a field named `cli` and calls [`cli_builder_methods!`] in
//! its `impl` block; only what is specific to one CLI (permission mode, sandbox, config overrides)
//! lives in the agent itself.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use smithers_core::{AgentError, TaskError};

/// Options shared by every CLI agent: which binary, where, with what model, system prompt, extra
/// arguments and environment, and our own timeouts.
#[derive(Clone, Debug)]
pub(crate) struct CliOptions {
    pub(crate) binary: PathBuf,
    /// What to tell a user whose machine lacks the binary ("install it with npm i -g ...").
    pub(crate) install_hint: &'static str,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) extra_args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) model: Option<String>,
    pub(crate) system_prompt: Option<String>,
    /// Used by the agents whose CLI has an allow-list (Claude, Gemini).
    pub(crate) allowed_tools: Vec<String>,
    /// Used by the agents whose CLI has a structured-output flag (Claude, Codex).
    pub(crate) native_schema: bool,
}

impl CliOptions {
    pub(crate) fn new(binary: &str, install_hint: &'static str) -> Self {
        CliOptions {
            binary: PathBuf::from(binary),
            install_hint,
            cwd: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            timeout: None,
            idle_timeout: None,
            model: None,
            system_prompt: None,
            allowed_tools: Vec::new(),
            native_schema: true,
        }
    }

    /// The output schema to pass with the CLI's structured-output flag, if enabled and usable.
    pub(crate) fn native_schema(&self, schema: &Value) -> Option<Value> {
        self.native_schema
            .then(|| crate::schema::native_schema(schema))
            .flatten()
    }

    /// [`CliOptions::native_schema`] in OpenAI's strict form (Codex's `--output-schema`).
    pub(crate) fn strict_native_schema(&self, schema: &Value) -> Option<Value> {
        self.native_schema
            .then(|| crate::schema::strict_schema(schema))
            .flatten()
    }
}

/// Implements the builder methods backed by [`CliOptions`] on an agent with a `cli` field. The
/// documentation of `model` and `system_prompt` says how that CLI takes them; `allowed_tools` and
/// `native_schema` are only generated for the CLIs that have them.
macro_rules! cli_builder_methods {
    (
        binary: $bin:literal,
        model: $model_doc:literal,
        system_prompt: $system_doc:literal
        $(, allowed_tools: $tools_doc:literal)?
        $(, native_schema: $schema_doc:literal)?
        $(,)?
    ) => {
        #[doc = concat!("Path or name of the `", $bin, "` binary (default `", $bin, "`, looked up on `PATH`).")]
        pub fn binary(mut self, path: impl Into<std::path::PathBuf>) -> Self {
            self.cli.binary = path.into();
            self
        }

        /// The working directory of the agent: the repository it reads and edits.
        pub fn cwd(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
            self.cli.cwd = Some(dir.into());
            self
        }

        /// An extra command-line argument, placed before the prompt.
        pub fn arg(mut self, arg: impl Into<std::ffi::OsString>) -> Self {
            self.cli.extra_args.push(arg.into());
            self
        }

        /// Extra command-line arguments, placed before the prompt.
        pub fn args<I, S>(mut self, args: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<std::ffi::OsString>,
        {
            self.cli.extra_args.extend(args.into_iter().map(Into::into));
            self
        }

        /// An environment variable for the child, on top of the inherited environment.
        pub fn env(mut self, key: impl Into<std::ffi::OsString>, value: impl Into<std::ffi::OsString>) -> Self {
            self.cli.env.push((key.into(), value.into()));
            self
        }

        /// Environment variables for the child, on top of the inherited environment.
        pub fn envs<I, K, V>(mut self, vars: I) -> Self
        where
            I: IntoIterator<Item = (K, V)>,
            K: Into<std::ffi::OsString>,
            V: Into<std::ffi::OsString>,
        {
            self.cli.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
            self
        }

        /// Wall-clock limit of one attempt when the task sets no `timeout`; the process group is
        /// killed when it passes.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.cli.timeout = Some(timeout);
            self
        }

        /// Kill the process group when it prints nothing on stdout for this long (the CLIs can
        /// wait minutes on a stalled stream).
        pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.cli.idle_timeout = Some(timeout);
            self
        }

        #[doc = $model_doc]
        pub fn model(mut self, model: impl Into<String>) -> Self {
            self.cli.model = Some(model.into());
            self
        }

        #[doc = $system_doc]
        pub fn system_prompt(mut self, prompt: impl Into<String>) -> Self {
            self.cli.system_prompt = Some(prompt.into());
            self
        }

        $(
            #[doc = $tools_doc]
            pub fn allowed_tools<I, S>(mut self, tools: I) -> Self
            where
                I: IntoIterator<Item = S>,
                S: Into<String>,
            {
                self.cli.allowed_tools.extend(tools.into_iter().map(Into::into));
                self
            }
        )?

        $(
            #[doc = $schema_doc]
            pub fn native_schema(mut self, enabled: bool) -> Self {
                self.cli.native_schema = enabled;
                self
            }
        )?
    };
}
pub(crate) use cli_builder_methods;

/// A CLI's arguments as JSON strings, for its [`Agent::signature`](smithers_core::Agent::signature):
/// the exact flags, in order, not a `Debug` rendering of them.
pub(crate) fn args_json(args: &[OsString]) -> Value {
    Value::Array(
        args.iter()
            .map(|a| Value::String(a.to_string_lossy().into_owned()))
            .collect(),
    )
}

/// A scratch file holding `contents` (a schema, a system prompt) for a flag that takes a path;
/// it is deleted when dropped, so keep it until the CLI has exited.
pub(crate) fn temp_file(
    prefix: &str,
    suffix: &str,
    contents: &str,
    what: &str,
) -> Result<tempfile::NamedTempFile, AgentError> {
    let io_error = |e: std::io::Error| {
        AgentError::from(TaskError::io(
            format_args!("cannot write the {what} file"),
            &e,
        ))
    };
    let mut file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile()
        .map_err(io_error)?;
    file.write_all(contents.as_bytes()).map_err(io_error)?;
    file.flush().map_err(io_error)?;
    Ok(file)
}
