"""The segmentation report replaces its own BENCHMARKS section and nothing else."""

from dsc_pose_core.training.seg_report import write_section


def test_report_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Segmentation (weakly supervised from 2D boxes)\n\nold table\n\n"
                    "<!-- other_bench:start -->\n## DeepIM\n\nkept\n<!-- other_bench:end -->\n\n"
                    "## Segmentation: another study\n\nalso kept\n")
    write_section(path, "## Segmentation (weakly supervised from 2D boxes)\n\nnew table\n")
    text = path.read_text()
    assert "old table" not in text and "new table" in text
    assert "<!-- other_bench:start -->\n## DeepIM\n\nkept\n<!-- other_bench:end -->" in text
    assert "## Segmentation: another study\n\nalso kept" in text
    write_section(path, "## Segmentation (weakly supervised from 2D boxes)\n\nnewer\n")
    assert path.read_text().count("## Segmentation (weakly") == 1
