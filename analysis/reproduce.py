"""The commands that rebuild this report from its study file (list it first in a study's
analyses to put them at the top of the report)."""

from shiftbench.report.build import AnalysisContext


def run(context: AnalysisContext) -> None:
    study, out = context.study.path, context.report.out
    context.report.text(
        "Reproduce:\n\n```bash\n"
        f"shiftbench run {study} && shiftbench report {study} --out {out}\n```"
    )
