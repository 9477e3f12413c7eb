"""`export`: write a diarization pipeline directory that `Pipeline.from_pretrained` loads."""

from __future__ import annotations

import argparse

from ..settings import CLUSTERINGS, argument_type
from .arguments import (
    Default,
    KeyValues,
    add_input,
    add_output,
    add_trust_argument,
    positive_float,
    positive_int,
    resolve_defaults,
)
from .common import add_database_argument

EXPORT = "pyannote_wavlm_prune.pipelines.export:export_pipeline"
EMBEDDING = "pyannote_wavlm_prune.pipelines.embedding_training:train_embedding"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_output(parser, "--output", required=True, help="pipeline directory to write")
    add_input(parser, "--segmentation", required=True, help="segmentation checkpoint")
    add_input(parser, "--embedding", help="speaker embedding checkpoint (pyannote Model); "
                                            "or --embedding-name, or --train-embedding")
    parser.add_argument("--embedding-name", help="a Hugging Face embedding model that config.yaml "
                                                 "names as it is (loaded from the hub or its cache)")
    parser.add_argument("--clustering", choices=CLUSTERINGS, default=Default(EXPORT, "clustering"),
                        help="how speakers are grouped across chunks")
    add_input(parser, "--plda", metavar="DIR",
                        help="directory with xvec_transform.npz and plda.npz (VBxClustering)")
    add_input(parser, "--params", metavar="YAML",
                        help="hyper-parameters: a YAML file with a 'params:' entry (or the "
                             "params themselves); defaults to the clustering's defaults")
    parser.add_argument("--segmentation-step", type=argument_type("segmentation_step"),
                        default=Default(EXPORT, "segmentation_step"),
                        help="step of the sliding window, as a ratio of its duration")
    parser.add_argument("--segmentation-batch-size",
                        type=argument_type("segmentation_batch_size", int),
                        default=Default(EXPORT, "segmentation_batch_size"),
                        help="chunks per segmentation forward pass")
    parser.add_argument("--embedding-batch-size",
                        type=argument_type("embedding_batch_size", int),
                        default=Default(EXPORT, "embedding_batch_size"),
                        help="(chunk, speaker) pairs per embedding forward pass")
    parser.add_argument("--embedding-exclude-overlap", action=argparse.BooleanOptionalAction,
                        default=Default(EXPORT, "embedding_exclude_overlap"),
                        help="embed each speaker's non-overlapped speech only")
    parser.add_argument("--der-variant", action=KeyValues,
                        help="the DER the pipeline is optimized for, e.g. collar=0.25 "
                             "skip_overlap=true (default: collar=0.0 skip_overlap=false)")
    parser.add_argument("--segmentation-runtime", default=None,
                        choices=["torch", "torch-int8", "onnxruntime", "onnxruntime-int8"],
                        help="how the pipeline runs its segmentation (config.yaml); the "
                             "onnxruntime ones export the model to ONNX now (default: as the "
                             "checkpoint is)")
    parser.add_argument("--embedding-runtime", default=None,
                        choices=["torch", "onnxruntime", "onnxruntime-int8"],
                        help="how the pipeline runs its speaker embedding (config.yaml); the "
                             "onnxruntime ones run its ResNet trunk with ONNX Runtime, exported "
                             "when the pipeline loads (default: as the model is)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    group = parser.add_argument_group(
        "offline embedding and PLDA, learnt from a protocol's training set")
    group.add_argument("--protocol", help="pyannote.database protocol")
    add_database_argument(group)
    group.add_argument("--train-embedding", action="store_true",
                       help="train an XVectorMFCC embedding (ArcFace) when --embedding is absent")
    group.add_argument("--embedding-epochs", type=positive_int, default=Default(EMBEDDING, "max_epochs"),
                       help="epochs of the embedding training")
    group.add_argument("--embedding-batches", type=positive_int, default=None,
                       help="training batches per epoch (default: the whole training set)")
    group.add_argument("--embedding-dimension", type=positive_int, default=Default(EMBEDDING, "dimension"),
                       help="dimension of the speaker embedding")
    group.add_argument("--embedding-duration", type=positive_float, default=Default(EMBEDDING, "duration"),
                       help="chunk duration of the embedding training, in seconds")
    group.add_argument("--embedding-classes-per-batch", type=positive_int,
                       default=Default(EMBEDDING, "num_classes_per_batch"),
                       help="speakers per embedding training batch")
    group.add_argument("--embedding-chunks-per-class", type=positive_int,
                       default=Default(EMBEDDING, "num_chunks_per_class"),
                       help="chunks per speaker in an embedding training batch")
    group.add_argument("--embedding-seed", type=int, default=Default(EMBEDDING, "seed"),
                       help="seed of the embedding training")
    group.add_argument("--estimate-plda", action="store_true",
                       help="estimate the PLDA of VBxClustering when --plda is absent")
    group.add_argument("--lda-dimension", type=positive_int, default=None,
                       help="dimension kept by the LDA before the PLDA (default: min(dimension, "
                            "speakers - 1), capped at 128)")
    add_trust_argument(parser)


def _protocol(args):
    from .common import get_protocol

    if not args.protocol:
        raise SystemExit("--train-embedding and --estimate-plda need --protocol.")
    return get_protocol(args)


def run(args: argparse.Namespace) -> int:
    args = resolve_defaults(args)  # the library's defaults, read from it now
    from pathlib import Path

    import yaml

    # the command line checked the output against every input (export_pipeline checks the
    # models it is given again)
    from ..pipelines import estimate_plda, export_pipeline, speaker_embeddings

    params = None
    if args.params:
        with open(args.params) as file:
            try:
                params = yaml.safe_load(file)
            except yaml.YAMLError as error:
                raise ValueError(f"--params {args.params} is not valid YAML "
                                 f"({' '.join(str(error).split())}).") from None
        if not isinstance(params, dict):
            raise ValueError(f"--params {args.params} holds {params!r}: expected a mapping of "
                             "hyper-parameters (or a 'params:' entry holding them).")
        params = params.get("params", params)

    embedding = args.embedding
    if embedding is None and args.train_embedding:
        from ..pipelines.embedding_training import train_embedding

        trainer_options = {}
        if args.embedding_batches is not None:
            trainer_options["limit_train_batches"] = args.embedding_batches
        embedding = train_embedding(_protocol(args), dimension=args.embedding_dimension,
                                    duration=args.embedding_duration,
                                    num_classes_per_batch=args.embedding_classes_per_batch,
                                    num_chunks_per_class=args.embedding_chunks_per_class,
                                    max_epochs=args.embedding_epochs, seed=args.embedding_seed,
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
        embedding_name=args.embedding_name,
        segmentation_step=args.segmentation_step,
        embedding_exclude_overlap=args.embedding_exclude_overlap,
        der_variant=args.der_variant,
        segmentation_batch_size=args.segmentation_batch_size,
        embedding_batch_size=args.embedding_batch_size,
        segmentation_runtime=args.segmentation_runtime,
        embedding_runtime=args.embedding_runtime,
        overwrite=args.overwrite,
    )
    print(f"pipeline written to {directory}")
    return 0
