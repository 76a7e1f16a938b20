"""Captured collections as assets: materializing one runs a drain of the capture that fills
it, and reports documents, offsets, the commit LSN and latency figures."""

import dagster as dg

from resources.flow_runtime import FlowRuntimeResource
from sophia_assets.catalog.model import Capture, Catalog


def capture_asset(
    capture: Capture, catalog: Catalog, specs: dict[dg.AssetKey, dg.AssetSpec]
) -> dg.AssetsDefinition:
    """One multi-asset per capture, covering the collections its bindings fill."""
    keys = list(dict.fromkeys(dg.AssetKey(b.target.split("/")) for b in capture.bindings))
    name = capture.name.replace("/", "__").replace("-", "_").replace(".", "_")

    @dg.multi_asset(
        name=f"capture__{name}",
        specs=[specs[key] for key in keys],
        description=f"Drains capture {capture.name}: backfill, then every change up to now.",
    )
    def _capture(context: dg.AssetExecutionContext, flow_runtime: FlowRuntimeResource):
        def progress(report) -> None:
            context.log.info(
                f"{report.task}: {report.documents} documents journaled, "
                f"checkpoint {report.checkpoint_lsn}"
            )

        report = flow_runtime.drain(catalog, capture.name, on_batch=progress)
        for key in keys:
            collection = "/".join(key.path)
            figures = report.collections.get(collection)
            metadata: dict = {
                "documents": figures.documents if figures else 0,
                "quarantined": figures.quarantined if figures else 0,
                "commit_lsn": report.checkpoint_lsn,
                "backfilled_rows": report.backfilled_rows,
                "transactions": report.transactions,
            }
            if figures and figures.first_offset is not None:
                metadata["first_offset"] = figures.first_offset
                metadata["last_offset"] = figures.last_offset
                latency = flow_runtime.latency(
                    collection, offsets=(figures.first_offset, figures.last_offset)
                )
                metadata.update(latency.as_metadata())
            yield dg.MaterializeResult(asset_key=key, metadata=metadata)

    return _capture
