//! The machine's host name, as the kernel has it (`uname -n`), one place for the daemon's
//! metrics (dcgm-exporter's `Hostname`) and the Slurm commands (slurmd's default node name).

/// The host name, whole (`gpu01.example.org` where the kernel has it so).
pub fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kernels_name_for_this_machine() {
        let name = super::hostname().unwrap();
        assert!(!name.is_empty() && !name.contains('\n'), "{name:?}");
    }
}
