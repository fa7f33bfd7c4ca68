//! `kickq completions` and `kickq man`: shell completions (clap_complete) and the man page (clap_mangen),
//! generated from the command definition `main` passes in, printed to stdout.

use std::io::Write;

/// Shells `kickq completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Shell {
    /// bash: `source <(kickq completions bash)`.
    Bash,
    /// zsh: save as `_kickq` in a directory of `$fpath`.
    Zsh,
    /// fish: save as `~/.config/fish/completions/kickq.fish`.
    Fish,
}

/// `kickq completions`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// `kickq man`: the page of kickq, or of one of its commands, or all of
/// them into a directory.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ManArgs {
    /// Write kickq.1 and a page for every command (kickq-enqueue.1,
    /// kickq-dlq-list.1, ...) into DIR, instead of printing one page.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<std::path::PathBuf>,
    /// The command whose page to print: `kickq man dlq list` prints
    /// kickq-dlq-list(1), the page kickq-dlq(1) refers to.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Writes the completion script for `shell` of the command `cmd`.
pub(crate) fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes the roff man page of the command `cmd`, or of its subcommand
/// `args.command`, to `out`; or, with `args.dir`, every page into that
/// directory (the pages a page's SEE ALSO and COMMANDS name, so none is
/// missing).
pub(crate) fn man(cmd: clap::Command, args: &ManArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        clap_mangen::generate_to(cmd, dir).with_context(|| format!("writing the pages into {}", dir.display()))?;
        return Ok(());
    }
    let mut page = &cmd;
    for name in &args.command {
        page = page.find_subcommand(name).ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no command {name:?} (its commands: {})",
                page.get_display_name().unwrap_or(page.get_name()),
                page.get_subcommands()
                    .map(|c| c.get_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    }
    clap_mangen::Man::new(page.clone()).render(out)?;
    Ok(())
}
