#!/usr/bin/env python3
"""Derive Tessera's GPU catalog from the researched reference data.

Reads ../shared/reference/mig-profiles.yaml (the project's read-only research data) and writes
crates/tessera-mig/data/catalog.yaml, the file embedded in the binary. The output keeps every
source key, confidence level and "inferred" mark of the reference; everything this script adds
(short names, the GPU-internal NUMA map, media-engine rule inputs) is marked as Tessera's own
inference in the file itself. Run it again whenever the reference changes:

    python3 scripts/gen-catalog.py [path/to/mig-profiles.yaml]
"""
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared", "reference", "mig-profiles.yaml")
DST = os.path.join(ROOT, "crates", "tessera-mig", "data", "catalog.yaml")

# reference name -> (canonical Tessera name, extra short names)
MODELS = {
    "A30-24GB": ("A30-24GB", ["A30"]),
    "A100-40GB": ("A100-40GB", ["A800-40GB"]),
    "A100-80GB": ("A100-80GB", ["A800-80GB"]),
    "H100-SXM5-80GB": ("H100-80GB", ["H100-SXM5-80GB", "H100-SXM-80GB", "H100", "H800-80GB"]),
    "H100-PCIE-80GB": ("H100-PCIE-80GB", ["H100-PCIe"]),
    "H100-94GB": ("H100-94GB", ["H100-NVL", "H100-NVL-94GB", "H100-SXM5-94GB"]),
    "H100-96GB-GH200": ("H100-96GB", ["GH200-96GB", "GH200", "H100-96GB-GH200"]),
    "H200-141GB": ("H200-141GB", ["H200", "H200-NVL"]),
    "GH200-144GB-HBM3e": ("GH200-144GB", ["GH200-144GB-HBM3e"]),
    "H20-96GB": ("H20-96GB", ["H20"]),
    "B200-180GB": ("B200-180GB", ["B200"]),
    "GB200-186GB": ("GB200-186GB", ["GB200"]),
    "B300": ("B300-269GB", ["B300"]),
    "GB300": ("GB300-278GB", ["GB300"]),
    "RTX-PRO-6000-Blackwell-96GB": ("RTX-PRO-6000", ["RTX-PRO-6000-Blackwell-96GB", "RTX-PRO-6000-Blackwell"]),
}
# Left out on purpose: no placement table or profile IDs exist for them in the reference.
SKIPPED = {
    "RTX-PRO-5000-Blackwell-48GB": "doc table only; profile IDs and placements unknown",
    "RTX-PRO-4500-Blackwell-32GB": "doc table only; profile IDs and placements unknown",
}

ref = yaml.safe_load(open(SRC))
by_name = {g["name"]: g for g in ref["gpus"]}

# Models the reference knows only by the profile names in NVIDIA's mig-parted config-default.yaml
# (migparted_cfg, device filter 0x31C210DE for GB300). Their profiles follow the B300 rows (the
# 8-unit pattern of ids, placements and counts, every row inferred) under NVIDIA's names.
NAMES_ONLY = {
    "GB300": ("B300", {"1g.34gb": "1g.35gb", "1g.34gb+me": "1g.35gb+me", "1g.67gb": "1g.70gb",
                       "2g.67gb": "2g.70gb", "3g.135gb": "3g.139gb", "4g.135gb": "4g.139gb",
                       "7g.269gb": "7g.278gb"}),
}


def names_only_profiles(ref_name):
    pattern, names = NAMES_ONLY[ref_name]
    out = []
    for p in by_name[pattern]["profiles"]:
        q = dict(p, name=names[p["name"]], placements=list(p["placements"]), inferred=True)
        q["note"] = f"name from migparted_cfg; id, placements and counts follow {pattern}'s 8-unit pattern"
        out.append(q)
    return out


def memory_total(g, profiles):
    """The whole GPU's MiB: the reference's total, else inferred from the full profile's name.

    go-nvlib names a profile `<slices>g.<GB>gb` with GB = round(fraction * ceil(total GiB)), and the
    full profile's fraction is 1, so its GB is the total rounded up to whole GiB: the total is taken
    as that many GiB (the upper end of the range the name allows) and marked inferred."""
    if g.get("memory_total_mib") is not None:
        return g["memory_total_mib"], False
    slices = g.get("memory_slices", 8)
    full = [p for p in profiles if p["memory_slices"] == slices and "+" not in p["name"]]
    if not full:
        return None, False
    gib = int(full[0]["name"].split(".", 1)[1].split("gb", 1)[0])
    total = gib * 1024
    known = max((p.get("memory_mib") or 0) for p in profiles)
    assert total >= known, f"{g['name']}: {total} MiB inferred total below the {known} MiB profile"
    return total, True


def suffix_kind(name):
    if name.endswith("+me.all"):
        return "media-all"
    if name.endswith("+me"):
        return "media"
    if name.endswith("-me"):
        return "no-media"
    if name.endswith("+gfx"):
        return "graphics"
    return "standard"


def numa_map(g, units):
    """GPU-internal NUMA node of each placement unit (research/mig-hardware.md §10)."""
    arch = g.get("architecture", "")
    if g["name"].startswith("RTX-PRO"):
        return None  # GB202 is a single die; §10 covers the flagship data-center parts only
    if arch.startswith(("Ampere", "Hopper", "Blackwell")):
        half = units // 2
        return {
            "nodes": 2,
            "unit_node": [0] * half + [1] * half,
            "inferred": True,
            "note": "NVIDIA publishes two GPU-internal NUMA nodes for Ampere/Hopper/Blackwell flagships but not which "
                    "placement units belong to which; every profile below the full one fits in one half of the grid, "
                    "so the lower half is taken as node 0 and the upper half as node 1 (on Blackwell: one die each).",
        }
    return None


def profile_entry(g, p, units, copied_from=None):
    name = p["name"]
    kind = suffix_kind(name)
    inferred_fields = list(p.get("inferred_fields", []))
    media = p.get("media")
    if media is not None:
        ofa = media.get("ofa", 0)
    else:
        # Media unknown: the OFA owner is a "+me"/"+me.all" profile or the full-GPU one.
        ofa = 1 if kind in ("media", "media-all") or p.get("placement_size") == units else 0
        inferred_fields.append("ofa_engines")
    e = {
        "name": name,
        "id": p["id"],
        "nvml_index": p.get("nvml_profile_index"),
        "kind": kind,
        "compute_slices": p["compute_slices"],
        "memory_slices": p["memory_slices"],
        "placement_size": p["placement_size"],
        "placements": p["placements"],
        "max_count": p["max_count"],
        "memory_mib": p.get("memory_mib"),
        "sm_count": None if copied_from else p.get("sm_count"),
        "ofa_engines": ofa,
    }
    if media is not None:
        e["media"] = {k: media.get(k, 0) for k in ("copy_engines", "nvdec", "nvenc", "jpeg", "ofa")}
    if p.get("min_driver"):
        e["min_driver"] = p["min_driver"]
    if p.get("aka"):
        e["aka"] = p["aka"]
    if p.get("default_ci_profile_id") is not None:
        e["default_ci_profile_id"] = p["default_ci_profile_id"]
    if p.get("inferred") or copied_from:
        e["inferred"] = True
    if p.get("confidence"):
        e["confidence"] = p["confidence"]
    if copied_from:
        inferred_fields += ["sm_count"]
    if inferred_fields:
        e["inferred_fields"] = sorted(set(inferred_fields))
    if p.get("note"):
        e["note"] = p["note"]
    return {k: v for k, v in e.items() if v is not None}


class CatalogDumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of scalars and for profile/media rows."""


def _represent_list(dumper, data):
    flow = all(not isinstance(x, (dict, list)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper, data):
    flow = all(not isinstance(v, dict) and not (isinstance(v, list) and any(isinstance(x, dict) for x in v))
               for v in data.values()) and "name" in data and "placements" in data or set(data) == {
        "copy_engines", "nvdec", "nvenc", "jpeg", "ofa"}
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


CatalogDumper.add_representer(list, _represent_list)
CatalogDumper.add_representer(dict, _represent_dict)

def derived_named_configs(profiles, compute_slices):
    """mig-parted's naming pattern (config-default.yaml) for models the reference lists no configs for:
    all-<profile> fills the GPU with one profile (all-<profile>.me takes the single +me instance) and
    all-balanced is 2x1g + 1x2g (+ 1x3g on 7-slice GPUs)."""
    out = {}
    by_shape = {}
    for p in profiles:
        name = p["name"]
        if name.endswith("+me"):
            out["all-" + name[:-3] + ".me"] = {name: 1}
        elif "+" not in name and not name.endswith("-me"):
            out["all-" + name] = {name: p["max_count"]}
            if p["memory_slices"] == p["compute_slices"] or p["compute_slices"] > 1:
                by_shape.setdefault(p["compute_slices"], name)
    if 1 in by_shape and 2 in by_shape:
        bal = {by_shape[1]: 2, by_shape[2]: 1}
        if compute_slices == 7 and 3 in by_shape:
            bal[by_shape[3]] = 1
        out["all-balanced"] = bal
    return out


out_models = []
for ref_name, (canon, shorts) in MODELS.items():
    g = by_name[ref_name]
    units = g.get("placement_units", 8)
    copied_from = None
    profiles = g.get("profiles") or []
    if ref_name in NAMES_ONLY:
        profiles = names_only_profiles(ref_name)
    if g.get("profiles_same_as"):
        copied_from = g["profiles_same_as"]
        profiles = by_name[copied_from]["profiles"]
    src_ci = g.get("compute_instance_profiles") or {}
    ci_refs = src_ci.get("ref") or ["gi_compute_slices_1", "gi_compute_slices_2", "gi_compute_slices_3",
                                     "gi_compute_slices_4", "gi_compute_slices_7"]
    inferred_fields = list(g.get("inferred_fields", []))
    memory_total_mib, total_inferred = memory_total(g, profiles)
    if total_inferred:
        inferred_fields.append("memory_total_mib")
    for k, dflt in (("placement_units", 8), ("memory_slices", 8), ("compute_slices", 7), ("max_gpu_instances", 7)):
        if k not in g:
            inferred_fields.append(k)
    m = {
        "name": canon,
        "reference_name": ref_name,
        "short_names": shorts,
        "architecture": g["architecture"],
        "chip": g.get("chip"),
        "product_names": g.get("aliases", []),
        "pci_device_ids": [p["id"] for p in g.get("pci_device_ids", [])],
        "placement_units": units,
        "memory_slices": g.get("memory_slices", 8),
        "compute_slices": g.get("compute_slices", 7),
        "max_gpu_instances": g.get("max_gpu_instances", 7),
        "memory_total_mib": memory_total_mib,
        "sm_count": g.get("sm_count"),
        "ofa_engines": 1,
        "min_driver": g.get("min_driver"),
        "mig_enable_requires_gpu_reset": g.get("mig_enable_requires_gpu_reset"),
        "confidence": g["confidence"],
        "inferred": bool(g.get("inferred", False)),
        "inferred_fields": sorted(set(inferred_fields)),
        "sources": g.get("source", []),
        "gpu_numa": numa_map(g, units),
        "compute_instance_profile_sets": [int(r.rsplit("_", 1)[1]) for r in ci_refs],
        "compute_instance_profiles_inferred": bool(src_ci.get("inferred", True)),
        "profiles": [profile_entry(g, p, units, copied_from) for p in profiles],
        "named_configs": g.get("named_configs_mig_parted") or derived_named_configs(profiles, g.get("compute_slices", 7)),
        "named_configs_inferred": not g.get("named_configs_mig_parted"),
    }
    notes = [g[k] for k in ("note", "alias_note", "naming_warning", "doc_note", "pci_ids_note") if g.get(k)]
    if total_inferred:
        notes.append(f"memory_total_mib inferred: the reference has no total; the full profile's name gives it "
                     f"rounded up to whole GiB (go-nvlib's naming rule), taken as {memory_total_mib // 1024} GiB")
    if copied_from:
        notes.append(f"profiles copied from {copied_from} (profiles_same_as); SM counts unknown")
    if notes:
        m["notes"] = notes
    out_models.append({k: v for k, v in m.items() if v is not None})

ci = {}
for key, rows in ref["compute_instance_profiles"].items():
    if not key.startswith("gi_compute_slices_"):
        continue
    n = int(key.rsplit("_", 1)[1])
    ci[n] = [{
        "id": r["id"],
        "compute_slices": r["compute_slices"],
        "max_count": r["max_count"],
        "placements": r["placements"],
        "placement_size": r["placement_size"],
        "default": bool(r.get("default", False)),
        "inferred_fields": r.get("inferred_fields", []),
    } for r in rows]

doc = {
    "schema_version": 1,
    "derived_from": f"shared/reference/mig-profiles.yaml (schema_version {ref['schema_version']}, compiled_on {ref['compiled_on']})",
    "generator": "scripts/gen-catalog.py",
    "left_out": SKIPPED,
    "sources": ref["sources"],
    "compute_instance_profiles": ci,
    "models": out_models,
}

header = """# Tessera GPU catalog -- GENERATED by scripts/gen-catalog.py from shared/reference/mig-profiles.yaml.
# Do not edit by hand: change the reference (or the generator) and regenerate.
#
# * `sources` keys are those of the reference; each model and profile names the ones it rests on.
# * `inferred: true` marks an object that was worked out, not read; `inferred_fields` lists single fields.
# * `gpu_numa` (the GPU-internal NUMA node of each placement unit) and a profile's `ofa_engines` where its
#   media columns are unknown are Tessera's own inferences, marked as such.
# * At run time NVML is the final word: this file is a cross-check and the simulated node's hardware.
"""
os.makedirs(os.path.dirname(DST), exist_ok=True)
with open(DST, "w") as f:
    f.write(header)
    yaml.dump(doc, f, Dumper=CatalogDumper, sort_keys=False, width=160, allow_unicode=True)
print(f"wrote {DST}: {len(out_models)} models")
