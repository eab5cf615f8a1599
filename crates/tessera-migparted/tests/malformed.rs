//! Data-driven tables: malformed mig-parted files and configs that cannot be applied, each with
//! the exact `origin:line:column: message` a user sees.

use tessera_mig::{GpuModel, catalog};
use tessera_migparted::{DeviceSummary, parse, resolve};

const ORIGIN: &str = "/etc/mig/config.yaml";

/// `(name, yaml, line, column, message)`.
const PARSE_ERRORS: &[(&str, &str, u32, u32, &str)] = &[
    (
        "bad indentation",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n     mig-enabled: false\n",
        5,
        6,
        "invalid YAML: while parsing a block collection, did not find expected '-' indicator (check the indentation of this line and the one above)",
    ),
    (
        "tab as indentation",
        "version: v1\nmig-configs:\n  a:\n\t- devices: all\n",
        4,
        2,
        "invalid YAML: tabs disallowed within this context (block indentation) (YAML indentation must use spaces, not tabs)",
    ),
    (
        "tab inside an entry",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n  \tmig-enabled: false\n",
        4,
        16,
        "invalid YAML: while scanning a plain scalar, found a tab (YAML indentation must use spaces, not tabs)",
    ),
    (
        "unclosed flow list",
        "version: v1\nmig-configs:\n  a:\n    - devices: [0, 1\n      mig-enabled: false\n",
        5,
        18,
        "invalid YAML: illegal placement of ':' indicator",
    ),
    ("unclosed quote", "version: \"v1\nmig-configs: {}\n", 1, 10, "invalid YAML: unclosed quote"),
    (
        "two documents",
        "version: v1\n---\nversion: v1\n",
        3,
        1,
        "invalid YAML: the file holds more than one YAML document ('---'); a mig-parted config is a single document",
    ),
    (
        "a list as a key",
        "version: v1\nmig-configs:\n  ? [a]\n  : x\n",
        3,
        5,
        "invalid YAML: a mapping key must be a name, not a list or a mapping",
    ),
    ("empty file", "", 1, 1, "the file is empty; a mig-parted config starts with 'version: v1' and 'mig-configs:'"),
    (
        "only a comment",
        "# nothing here\n",
        1,
        1,
        "the file is empty; a mig-parted config starts with 'version: v1' and 'mig-configs:'",
    ),
    (
        "top level is a list",
        "- version: v1\n",
        1,
        1,
        "the file must be a mapping with 'version' and 'mig-configs', not a list",
    ),
    (
        "unknown top-level field",
        "version: v1\nmig-config:\n  a:\n    - devices: all\n      mig-enabled: false\n",
        2,
        1,
        "unknown field 'mig-config' at the top level; allowed fields: version, mig-configs (did you mean 'mig-configs'?)",
    ),
    (
        "unknown entry field",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-device: {}\n",
        6,
        7,
        "unknown field 'mig-device' in an entry of config 'a'; allowed fields: devices, device-filter, mig-enabled, mig-devices (did you mean 'mig-devices'?)",
    ),
    (
        "version v2",
        "version: v2\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n",
        1,
        10,
        "unsupported version 'v2'; only mig-parted's 'version: v1' format exists",
    ),
    (
        "version as a number",
        "version: 1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n",
        1,
        10,
        "unsupported version '1'; only mig-parted's 'version: v1' format exists",
    ),
    (
        "missing version",
        "mig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n",
        1,
        1,
        "missing required field 'version'; mig-parted config files start with 'version: v1'",
    ),
    ("missing mig-configs", "version: v1\n", 1, 1, "missing required field 'mig-configs' at the top level"),
    (
        "no configs",
        "version: v1\nmig-configs: {}\n",
        2,
        1,
        "'mig-configs' defines no configs; it needs at least one, such as 'all-disabled'",
    ),
    (
        "config with an empty list",
        "version: v1\nmig-configs:\n  a: []\n",
        3,
        3,
        "config 'a' has no entries; it needs at least one, such as '- devices: all'",
    ),
    (
        "config with nothing",
        "version: v1\nmig-configs:\n  a:\n",
        3,
        3,
        "config 'a' has no entries; it needs at least one, such as '- devices: all'",
    ),
    (
        "config is a mapping, not a list",
        "version: v1\nmig-configs:\n  a:\n    devices: all\n",
        4,
        5,
        "config 'a' must be a list of entries, each starting with '- devices:', not a mapping",
    ),
    (
        "entry is not a mapping",
        "version: v1\nmig-configs:\n  a:\n    - all\n",
        4,
        7,
        "each entry of config 'a' must be a mapping with 'devices' and 'mig-enabled', not the string 'all'",
    ),
    (
        "devices as a string other than all",
        "version: v1\nmig-configs:\n  a:\n    - devices: some\n      mig-enabled: false\n",
        4,
        16,
        "'devices' in an entry of config 'a' must be 'all' or a list of GPU indices such as [0, 1], not the string 'some'",
    ),
    (
        "devices as one number",
        "version: v1\nmig-configs:\n  a:\n    - devices: 3\n      mig-enabled: false\n",
        4,
        16,
        "'devices' in an entry of config 'a' must be 'all' or a list of GPU indices such as [0, 1] (write [3] for one GPU), not the number 3",
    ),
    (
        "negative GPU index",
        "version: v1\nmig-configs:\n  a:\n    - devices: [0, -1]\n      mig-enabled: false\n",
        4,
        20,
        "'devices' in an entry of config 'a' must be a list of GPU indices (integers from 0), not the number -1",
    ),
    (
        "missing devices",
        "version: v1\nmig-configs:\n  a:\n    - mig-enabled: false\n",
        4,
        7,
        "missing required field 'devices' in an entry of config 'a' (write 'devices: all' or a list such as [0, 1])",
    ),
    (
        "negative count",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": -1\n",
        7,
        20,
        "the count of '1g.10gb' in 'mig-devices' must be a non-negative integer, not the number -1",
    ),
    (
        "fractional count",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        1g.10gb: 1.5\n",
        7,
        18,
        "the count of '1g.10gb' in 'mig-devices' must be a non-negative integer, not the number 1.5",
    ),
    (
        "quoted count",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": \"2\"\n",
        7,
        20,
        "the count of '1g.10gb' in 'mig-devices' must be a non-negative integer, not the string '2'",
    ),
    (
        "missing mig-enabled",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-devices: {}\n",
        4,
        7,
        "missing required field 'mig-enabled' in an entry of config 'a'",
    ),
    (
        "mig-enabled not a boolean",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: maybe\n",
        5,
        20,
        "'mig-enabled' in an entry of config 'a' must be true or false, not the string 'maybe'",
    ),
    (
        "mig-devices with mig-enabled false",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n      mig-devices:\n        \"1g.10gb\": 1\n",
        6,
        7,
        "'mig-devices' lists MIG devices but 'mig-enabled' is false; remove them or set 'mig-enabled: true'",
    ),
    (
        "missing mig-devices with mig-enabled true",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n",
        4,
        7,
        "missing required field 'mig-devices' in an entry of config 'a' (required when 'mig-enabled' is true; write 'mig-devices: {}' for no MIG devices)",
    ),
    (
        "empty mig-devices with mig-enabled true",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n",
        6,
        18,
        "'mig-devices' in an entry of config 'a' must be a mapping of MIG device types to counts, such as {\"1g.10gb\": 2} (or {} for none), not nothing (null)",
    ),
    (
        "mig-devices as a list",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices: [\"1g.10gb\"]\n",
        6,
        20,
        "'mig-devices' in an entry of config 'a' must be a mapping of MIG device types to counts, such as {\"1g.10gb\": 2} (or {} for none), not a list",
    ),
    (
        "duplicate field",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n      devices: [0]\n",
        6,
        7,
        "duplicate key 'devices' (first at line 4, column 7)",
    ),
    (
        "duplicate config name",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n  a:\n    - devices: all\n      mig-enabled: false\n",
        6,
        3,
        "duplicate key 'a' (first at line 3, column 3)",
    ),
    (
        "duplicate MIG device",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        1g.10gb: 1\n        1g.10gb: 2\n",
        8,
        9,
        "duplicate key '1g.10gb' (first at line 7, column 9)",
    ),
    (
        "unquoted device filter",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: 0x233010DE\n      mig-enabled: false\n",
        5,
        22,
        "device filter '0x233010DE' is read by YAML as a number; mig-parted needs device filters as strings, so quote it: \"0x233010DE\"",
    ),
    (
        "device filter without vendor",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: [\"0x233010DE\", \"0x2330\"]\n      mig-enabled: false\n",
        5,
        37,
        "device filter '0x2330' has vendor id 0x2330, not NVIDIA's 0x10DE; write the device id followed by 10DE, such as \"0x233010DE\"",
    ),
    (
        "device filter that is a name",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: H100\n      mig-enabled: false\n",
        5,
        22,
        "device filter 'H100' is not a PCI id; write the device id followed by NVIDIA's vendor id 10DE, such as \"0x233010DE\"",
    ),
    (
        "device filter with two ':'",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: \"0x233010DE:0x16C110DE:0x1\"\n      mig-enabled: false\n",
        5,
        22,
        "device filter '0x233010DE:0x16C110DE:0x1' has 2 ':'; write the PCI id, optionally followed by one ':' and the board's subsystem id, such as \"0x233010DE:0x16C110DE\"",
    ),
    (
        "device filter with a subsystem id that is not hex (mig-parted: matches no GPU)",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: [\"0x20B010DE\", \"0x233010DE:16C1\"]\n      mig-enabled: false\n",
        5,
        37,
        "device filter '0x233010DE:16C1' has subsystem id '16C1' after ':', which is not a 32-bit number; write the subsystem device id followed by the subsystem vendor id, such as \"0x233010DE:0x16C110DE\"",
    ),
    (
        "every count 0 (mig-parted: all counts for all MigProfiles are 0)",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 0\n",
        6,
        7,
        "every count in 'mig-devices' is 0; give at least one MIG device a count above 0, or write 'mig-devices: {}' for none",
    ),
    (
        "every count 0, two device types",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb\": 0\n        \"3g.40gb\": 0\n",
        6,
        7,
        "every count in 'mig-devices' is 0; give at least one MIG device a count above 0, or write 'mig-devices: {}' for none",
    ),
    (
        "every count 0 with mig-enabled false",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n      mig-devices:\n        \"1g.10gb\": 0\n",
        6,
        7,
        "every count in 'mig-devices' is 0; give at least one MIG device a count above 0, or write 'mig-devices: {}' for none",
    ),
    (
        "unit cut short",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"3g.20g\": 1\n",
        7,
        9,
        "'3g.20g' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '20g' does not end in 'gb' (lower case) (did you mean '3g.20gb'?)",
    ),
    (
        "profile id instead of a name",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        9: 1\n",
        7,
        9,
        "'9' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): it needs 2 or 3 fields separated by '.'",
    ),
    (
        "unit cut short behind a compute prefix",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1c.3g.20g\": 1\n",
        7,
        9,
        "'1c.3g.20g' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '20g' does not end in 'gb' (lower case) (did you mean '1c.3g.20gb'?)",
    ),
    (
        "upper-case device type",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1G.10GB\": 1\n",
        7,
        9,
        "'1G.10GB' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '1G' does not end in 'g' (lower case) (did you mean '1g.10gb'?)",
    ),
    (
        "upper-case memory unit",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10GB\": 1\n",
        7,
        9,
        "'1g.10GB' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '10GB' does not end in 'gb' (lower case) (did you mean '1g.10gb'?)",
    ),
    (
        "upper-case compute prefix",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1C.3g.40gb\": 1\n",
        7,
        9,
        "'1C.3g.40gb' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '1C' does not end in 'c' (lower case) (did you mean '1c.3g.40gb'?)",
    ),
    (
        "trailing space in a device type",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb \": 1\n",
        7,
        9,
        "'1g.10gb ' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): '10gb ' has leading or trailing spaces (did you mean '1g.10gb'?)",
    ),
    (
        "leading space in a device type",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \" 1g.10gb\": 1\n",
        7,
        9,
        "' 1g.10gb' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): ' 1g' has leading or trailing spaces (did you mean '1g.10gb'?)",
    ),
    (
        "space inside a device type",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g. 10gb\": 1\n",
        7,
        9,
        "'1g. 10gb' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): ' 10gb' has leading or trailing spaces (did you mean '1g.10gb'?)",
    ),
    (
        "device type without dots",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g10gb\": 1\n",
        7,
        9,
        "'1g10gb' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): it needs 2 or 3 fields separated by '.'",
    ),
    (
        "device type with + and - attributes",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb+me-gfx\": 1\n",
        7,
        9,
        "'1g.10gb+me-gfx' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): it has both '+' and '-' attributes",
    ),
    (
        "attribute with a space",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb+ me\": 1\n",
        7,
        9,
        "'1g.10gb+ me' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): an attribute has leading or trailing spaces (' me') (did you mean '1g.10gb+me'?)",
    ),
    (
        "attribute twice",
        "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        \"1g.10gb+me,me\": 1\n",
        7,
        9,
        "'1g.10gb+me,me' is not a MIG device type as mig-parted writes them ('1g.10gb', '1c.3g.40gb', '1g.10gb+me'): an attribute is listed twice ('me')",
    ),
];

#[test]
fn parse_errors_name_file_line_column_and_problem() {
    let mut failures = Vec::new();
    for &(name, yaml, line, column, message) in PARSE_ERRORS {
        match parse(yaml, ORIGIN) {
            Ok(_) => failures.push(format!("{name}: parsed, expected an error")),
            Err(e) => {
                let expected = format!("{ORIGIN}:{line}:{column}: {message}");
                if e.to_string() != expected || (e.line, e.column) != (line, column) || e.message != message {
                    failures.push(format!("{name}:\n  expected {expected}\n  got      {e}"));
                }
                assert_eq!(e.origin, ORIGIN);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn model(name: &str) -> &'static GpuModel {
    catalog().model(name).unwrap()
}

/// GPUs 0-1: A100-40GB; 2-3: H100-80GB; 4: a GPU Tessera does not know.
fn node() -> Vec<DeviceSummary> {
    vec![
        DeviceSummary { index: 0, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(model("A100-40GB")) },
        DeviceSummary { index: 1, pci_device_id: 0x20B0, pci_subsystem_id: 0, model: Some(model("A100-40GB")) },
        DeviceSummary { index: 2, pci_device_id: 0x2330, pci_subsystem_id: 0, model: Some(model("H100-80GB")) },
        DeviceSummary { index: 3, pci_device_id: 0x2330, pci_subsystem_id: 0, model: Some(model("H100-80GB")) },
        DeviceSummary { index: 4, pci_device_id: 0x1EB8, pci_subsystem_id: 0, model: None },
    ]
}

fn one_entry(devices: &str, mig_devices: &str) -> String {
    format!(
        "version: v1\nmig-configs:\n  a:\n    - devices: {devices}\n      mig-enabled: true\n      mig-devices:\n{mig_devices}"
    )
}

/// How a resolve error's message is checked.
enum Expect {
    Exact(&'static str),
    /// The message comes from the planner: the GPU prefix and the alternative are ours to check.
    PrefixSuffix(&'static str, &'static str),
}

#[test]
fn resolve_errors_name_file_line_column_and_problem() {
    let cases: Vec<(&str, String, &str, u32, u32, Expect)> = vec![
        (
            "H100 profile on an A100",
            one_entry("[1]", "        \"3g.20gb\": 1\n        \"3g.40gb\": 1\n"),
            "a",
            8,
            9,
            Expect::Exact("GPU 1 (A100-40GB) has no MIG device type '3g.40gb' (did you mean '3g.20gb'?)"),
        ),
        (
            "no 3c compute instance in a 4g GPU instance",
            one_entry("[0]", "        \"3c.4g.20gb\": 1\n"),
            "a",
            7,
            9,
            Expect::Exact(
                "GPU 0 (A100-40GB): '3c.4g.20gb' asks for a compute instance of 3 slice(s), but a 4g.20gb GPU instance offers only 1c, 2c, 4c",
            ),
        ),
        (
            "well-formed name with a typo behind a compute prefix",
            one_entry("[0]", "        \"1c.3g.30gb\": 1\n"),
            "a",
            7,
            9,
            Expect::Exact("GPU 0 (A100-40GB) has no MIG device type '1c.3g.30gb' (did you mean '1c.3g.20gb'?)"),
        ),
        (
            "two 4g.20gb do not fit",
            one_entry("[0]", "        \"4g.20gb\": 2\n"),
            "a",
            4,
            7,
            Expect::PrefixSuffix("GPU 0 (A100-40GB): ", "; 4g.20gb + 3g.20gb fits"),
        ),
        (
            "too many compute slices on an H100",
            one_entry("[2]", "        \"4g.40gb\": 1\n        \"3g.40gb\": 1\n        \"1g.10gb\": 1\n"),
            "a",
            4,
            7,
            Expect::PrefixSuffix("GPU 2 (H100-80GB): ", "; 4g.40gb + 3g.40gb fits"),
        ),
        (
            "absurd count",
            one_entry("[0]", "        \"1g.5gb\": 4000000000\n"),
            "a",
            4,
            7,
            Expect::Exact("GPU 0 (A100-40GB): 4000000000 MIG devices asked but one A100-40GB holds at most 7 (each is a compute instance of at least one of its 7 compute slices)"),
        ),
        (
            "compute instances that make more GPU instances than fit",
            one_entry("[0]", "        \"1c.3g.20gb\": 7\n"),
            "a",
            4,
            7,
            Expect::PrefixSuffix(
                "GPU 0 (A100-40GB): ",
                "; as mig-parted groups them, the 7 compute instances make 3 GPU instances: 1c.3g.20gb ×3; 1c.3g.20gb ×3; 1c.3g.20gb",
            ),
        ),
        (
            "unknown config name",
            "version: v1\nmig-configs:\n  all-balanced:\n    - devices: all\n      mig-enabled: false\n  all-disabled:\n    - devices: all\n      mig-enabled: false\n".to_string(),
            "all-balance",
            2,
            1,
            Expect::Exact("unknown config 'all-balance' (did you mean 'all-balanced'?); the file defines: all-balanced, all-disabled"),
        ),
        (
            "GPU matched by two entries",
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n    - devices: [1]\n      mig-enabled: false\n".to_string(),
            "a",
            6,
            7,
            Expect::Exact(
                "GPU 1 is matched by two entries of config 'a': the entry at line 4, column 7 and the entry at line 6, column 7",
            ),
        ),
        (
            "an entry for all GPUs stops at the first model without the profile",
            one_entry("all", "        \"1g.5gb\": 1\n"),
            "a",
            7,
            9,
            Expect::Exact("GPU 2 (H100-80GB) has no MIG device type '1g.5gb' (did you mean '1g.10gb'?)"),
        ),
        (
            "MIG on a GPU of unknown model",
            one_entry("[4]", "        \"1g.5gb\": 1\n"),
            "a",
            4,
            7,
            Expect::Exact(
                "GPU 4 (PCI device 0x1EB8) is not a MIG-capable GPU model Tessera knows, so MIG cannot be enabled on it",
            ),
        ),
    ];

    let node = node();
    let mut failures = Vec::new();
    for (name, yaml, config, line, column, expect) in &cases {
        let file = parse(yaml, ORIGIN).unwrap_or_else(|e| panic!("{name}: {e}"));
        let e = match resolve(&file, config, &node) {
            Ok(t) => {
                failures.push(format!("{name}: resolved to {t:?}, expected an error"));
                continue;
            }
            Err(e) => e,
        };
        let ok_message = match expect {
            Expect::Exact(m) => e.message == *m,
            Expect::PrefixSuffix(p, s) => e.message.starts_with(p) && e.message.ends_with(s),
        };
        let ok_display = e.to_string() == format!("{ORIGIN}:{}:{}: {}", e.line, e.column, e.message);
        if !ok_message || !ok_display || (e.line, e.column) != (*line, *column) {
            failures.push(format!("{name}: expected {line}:{column}, got {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
