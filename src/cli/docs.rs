//! `kickq completions` and `kickq man`: shell completions (clap_complete) and the man page (clap_mangen),
//! generated from the command definition `main` passes in, printed to stdout.

use std::io::Write;

/// Shells `kickq completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash: `source <(kickq completions bash)`.
    Bash,
    /// zsh: save as `_kickq` in a directory of `$fpath`.
    Zsh,
    /// fish: save as `~/.config/fish/completions/kickq.fish`.
    Fish,
}

/// `kickq completions`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: Shell,
}

/// `kickq man`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {}

/// Writes the completion script for `shell` of the command `cmd`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes the roff man page of the command `cmd`.
pub fn man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).render(out)
}
