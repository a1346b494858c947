"""The verified report of a bench session (edge.bench): JSON, CSV, and PDF through fpdf2 (pure
Python; pip install 'edge-medical[report]'). The counts are the technician's, beside the device's;
the report says who approved the session and when, the model and its SHA-256, and that it is for
research use only."""
from __future__ import annotations

import csv
import io

RESEARCH_ONLY = "Research use only. Not for diagnosis; the verified count is the technician's."


def report(bench) -> dict:
    summary = bench.summary()
    meta = bench.meta
    names = meta.get("names", {})
    return {"session": meta["name"], "id": meta["id"], "started": meta["started"], "mode": meta["mode"],
            "model": meta["model"], "model_sha256": meta["model_sha256"], "labels": meta["labels"],
            "names": names, "captures": summary["captures"], "cells": summary["cells"],
            "reviewed": summary["reviewed"], "device": summary["device"], "verified": summary["verified"],
            "verified_counted": summary["verified_counted"],
            "verified_positive_fraction": summary["verified_positive_fraction"],
            "verified_positive_fraction_ci95": summary["verified_positive_fraction_ci95"],
            "device_positive_fraction": summary["device_positive_fraction"],
            "agreement": summary["agreement"],
            "approved": summary["approved"] is not None,
            "approved_by": (summary["approved"] or {}).get("by"), "approved_at": (summary["approved"] or {}).get("time"),
            "notice": RESEARCH_ONLY}


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _rows(data: dict) -> list[tuple[str, str]]:
    names = data["names"]
    negative, positive = data["labels"]
    interval = data["verified_positive_fraction_ci95"]
    rows = [("session", str(data["session"])), ("session id", data["id"]), ("started", data["started"]),
            ("model", data["model"]), ("model SHA-256", data["model_sha256"]),
            ("captures", str(data["captures"])), ("cells captured", str(data["cells"])),
            ("cells reviewed", str(data["reviewed"]))]
    for code in (positive, negative):
        rows.append((f"{names.get(code, code)}: device / verified",
                     f"{data['device'][code]} / {data['verified'][code]}"))
    rows += [("uncertain (device)", str(data["device"]["uncertain"])),
             ("out of domain (device)", str(data["device"]["out_of_domain"])),
             ("not a cell (verified)", str(data["verified"]["not_a_cell"])),
             (f"{names.get(positive, positive)} share, verified", _percent(data["verified_positive_fraction"])),
             ("95% interval (Wilson)", "-" if interval is None else f"{_percent(interval[0])} - {_percent(interval[1])}"),
             (f"{names.get(positive, positive)} share, device", _percent(data["device_positive_fraction"])),
             ("agreement with the device", "-" if data["agreement"]["fraction"] is None else
              f"{data['agreement']['agreed']} of {data['agreement']['cells']} ({_percent(data['agreement']['fraction'])})"),
             ("approved by", data["approved_by"] or "not approved"), ("approved at", data["approved_at"] or "-")]
    return rows


def report_csv(data: dict) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["field", "value"])
    for row in _rows(data):
        # a name starting with = + - @ is not a formula in a spreadsheet
        writer.writerow(["'" + v if v[:1] in "=+-@" else v for v in row])
    writer.writerow(["notice", data["notice"]])
    return out.getvalue().encode("utf-8")


def report_pdf(data: dict) -> bytes:
    """A one-page PDF; ImportError when fpdf2 is not installed."""
    from fpdf import FPDF
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()

    def latin(text: str) -> str:  # the core fonts are Latin-1
        return str(text).encode("latin-1", "replace").decode("latin-1")

    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 8, latin(f"Verified cell count: {data['session']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.ln(2)
    for label, value in _rows(data):
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(70, 6, latin(label))
        pdf.set_font("Helvetica", "", 10)
        pdf.multi_cell(0, 6, latin(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "I", 10)
    pdf.multi_cell(0, 6, latin(data["notice"]), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
