//! `kickq migrate`: applies the audit ledger's embedded migrations and says which ones it applied.

use super::flags::DatabaseArgs;
use crate::ledger::PendingMigration;

/// `kickq migrate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MigrateArgs {
    /// The ledger database.
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Runs `kickq migrate`. Another process migrating at the same time is safe
/// (sqlx takes an advisory lock); the report then may list a migration that
/// the other process applied.
pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let ledger = args.database.ledger().await?;
    let pending = ledger.pending_migrations().await?;
    ledger.migrate().await?;
    print!("{}", migrate_report(&args.database.display_url(), &pending));
    Ok(())
}

/// What `kickq migrate` prints, given the migrations that were pending.
pub(crate) fn migrate_report(database: &str, applied: &[PendingMigration]) -> String {
    if applied.is_empty() {
        return format!("{database}: already up to date, nothing applied\n");
    }
    let mut out = format!("{database}: applied {} migration(s)\n", applied.len());
    for m in applied {
        out.push_str(&format!("  {:04} {}\n", m.version, m.description));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_what_was_applied() {
        let applied = [PendingMigration {
            version: 1,
            description: "ledger".into(),
        }];
        assert_eq!(
            migrate_report("postgres://db/kickq", &applied),
            "postgres://db/kickq: applied 1 migration(s)\n  0001 ledger\n"
        );
        assert_eq!(
            migrate_report("postgres://db/kickq", &[]),
            "postgres://db/kickq: already up to date, nothing applied\n"
        );
    }
}
