//! `nvidia-mig-parted …`: Tessera under mig-parted's name (a symlink), so NVIDIA's mig-manager,
//! its systemd service and their scripts call it unchanged. The verbs run the same code as
//! `tessera mig …`, on the node the `TESSERA_*` variables choose, in mig-parted's voice: its
//! success lines on stdout, exit status 1 for every failure (`docs/mig-parted.md`).

use super::config::{self, Voice};
use super::{checkpoint, export};
use crate::cli::{ExportArgs, Global, MigPartedCli, MigPartedCommand};

/// `nvidia-mig-parted VERB …`: the verbs of mig-parted on the node `TESSERA_*` chooses, in
/// mig-parted's voice.
pub fn run_mig_parted(cli: MigPartedCli) -> anyhow::Result<()> {
    let global = Global::from_env().map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    let voice = Voice::MigParted { debug: cli.debug };
    match cli.command {
        None => Ok(()),
        Some(MigPartedCommand::Apply(args)) => config::apply(&global, &args, false, voice),
        Some(MigPartedCommand::Assert { config, valid_config }) => {
            config::assert(&global, &config, valid_config, voice)
        }
        Some(MigPartedCommand::GenerateConfig { output_file, output_format }) => {
            export::generate_config(&global, output_file.as_deref(), Some(output_format))
        }
        Some(MigPartedCommand::Export(args)) => export::export(
            &global,
            &ExportArgs { config_label: args.config_label, output_format: Some(args.output_format) },
        ),
        Some(MigPartedCommand::Checkpoint(args)) => checkpoint::checkpoint(&global, &args, voice),
        Some(MigPartedCommand::Restore(args)) => checkpoint::restore(&global, &args, voice),
    }
}
