//! A progress spinner on a terminal, and only there: it shows the pipeline step in progress
//! while log lines scroll above it. Not used with `--json` or when stderr is not a terminal.

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::span;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A ticking spinner on stderr.
pub fn spinner() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}").expect("a valid template"));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Writes log lines to stderr with the spinner hidden meanwhile.
#[derive(Clone)]
pub struct SuspendingStderr(pub ProgressBar);

impl Write for SuspendingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.suspend(|| io::stderr().write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for SuspendingStderr {
    type Writer = SuspendingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Shows the innermost entered span's name as the spinner message.
pub struct StepMessages(pub ProgressBar);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StepMessages {
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let path: Vec<&str> = span.scope().from_root().map(|s| s.name()).collect();
            self.0.set_message(path.join(" › "));
        }
    }
}
