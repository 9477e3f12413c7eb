"""`export`: write a diarization pipeline directory that `Pipeline.from_pretrained` loads."""

from __future__ import annotations

import argparse

CLUSTERINGS = ["AgglomerativeClustering", "KMeansClustering", "VBxClustering", "OracleClustering"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="pipeline directory to write")
    parser.add_argument("--segmentation", required=True, help="segmentation checkpoint")
    parser.add_argument("--embedding", help="speaker embedding checkpoint (pyannote Model)")
    parser.add_argument("--clustering", choices=CLUSTERINGS, default="AgglomerativeClustering")
    parser.add_argument("--plda", metavar="DIR",
                        help="directory with xvec_transform.npz and plda.npz (VBxClustering)")
    parser.add_argument("--params", metavar="YAML",
                        help="hyper-parameters: a YAML file with a 'params:' entry (or the "
                             "params themselves); defaults to the clustering's defaults")
    parser.add_argument("--segmentation-step", type=float, default=0.1,
                        help="step of the sliding window, as a ratio of its duration")
    parser.add_argument("--segmentation-batch-size", type=int, default=1)
    parser.add_argument("--embedding-batch-size", type=int, default=1)
    parser.add_argument("--segmentation-runtime", default=None,
                        choices=["torch", "torch-int8", "onnxruntime", "onnxruntime-int8"],
                        help="how the pipeline runs its segmentation (config.yaml); the "
                             "onnxruntime ones export the model to ONNX now")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    group = parser.add_argument_group(
        "offline embedding and PLDA, learnt from a protocol's training set")
    group.add_argument("--protocol", help="pyannote.database protocol")
    group.add_argument("--database", action="append", default=[], metavar="YML",
                       help="database.yml to load (repeatable)")
    group.add_argument("--train-embedding", action="store_true",
                       help="train an XVectorMFCC embedding (ArcFace) when --embedding is absent")
    group.add_argument("--embedding-epochs", type=int, default=20)
    group.add_argument("--embedding-batches", type=int, default=None,
                       help="training batches per epoch (default: the whole training set)")
    group.add_argument("--embedding-dimension", type=int, default=128)
    group.add_argument("--estimate-plda", action="store_true",
                       help="estimate the PLDA of VBxClustering when --plda is absent")
    group.add_argument("--lda-dimension", type=int, default=None)


def _protocol(args):
    from .common import get_protocol

    if not args.protocol:
        raise SystemExit("--train-embedding and --estimate-plda need --protocol.")
    return get_protocol(args)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from ..files import check_output_location

    # before the heavy imports below: export_pipeline checks it again
    check_output_location(args.output, [("--segmentation", args.segmentation),
                                        ("--embedding", args.embedding), ("--plda", args.plda)])

    from ..pipelines import estimate_plda, export_pipeline, speaker_embeddings

    params = None
    if args.params:
        with open(args.params) as file:
            params = yaml.safe_load(file)
        params = params.get("params", params)

    embedding = args.embedding
    if embedding is None and args.train_embedding:
        from ..pipelines.embedding import train_embedding

        trainer_options = {}
        if args.embedding_batches is not None:
            trainer_options["limit_train_batches"] = args.embedding_batches
        embedding = train_embedding(_protocol(args), dimension=args.embedding_dimension,
                                    max_epochs=args.embedding_epochs,
                                    trainer_options=trainer_options)
    plda = args.plda
    if plda is None and args.estimate_plda:
        if embedding is None:
            raise SystemExit("--estimate-plda needs --embedding or --train-embedding.")
        vectors, labels = speaker_embeddings(embedding, _protocol(args).train())
        plda = estimate_plda(vectors, labels, lda_dimension=args.lda_dimension)

    directory = export_pipeline(
        Path(args.output),
        segmentation=args.segmentation,
        embedding=embedding,
        plda=plda,
        clustering=args.clustering,
        params=params,
        segmentation_step=args.segmentation_step,
        segmentation_batch_size=args.segmentation_batch_size,
        embedding_batch_size=args.embedding_batch_size,
        segmentation_runtime=args.segmentation_runtime,
        overwrite=args.overwrite,
    )
    print(f"pipeline written to {directory}")
    return 0
