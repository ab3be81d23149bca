"""llm_course: the package the course's notebooks build, chapter by chapter.

Each module is one concept, records the chapter that defines it in its CHAPTER constant (and, in CHAPTERS,
the names a later chapter adds to it) and lists its public names in `__all__`. `CHAPTER_OF` maps every
public name of the package to its chapter.
"""

from . import (
    attention,
    bpe,
    chat,
    checkpoints,
    classification,
    classifier_cli,
    classroom,
    cpu_memory,
    data,
    dataset,
    diagrams,
    distributed,
    embeddings,
    exercises,
    explore,
    generation,
    gpt2_bpe,
    gpt2_compat,
    instructions,
    kv_cache,
    live,
    llama_compat,
    lora,
    model,
    multihead_attention,
    pipeline,
    plotting,
    progress,
    token_store,
    tokenizers,
    training,
    utils,
)
from .attention import (
    CausalAttention,
    SelfAttentionV1,
    SelfAttentionV2,
    attention_weights,
    causal_attention,
    causal_mask,
    check_attention_input,
)
from .bpe import (
    COURSE_TOKENIZER_FILE,
    GPT2_PATTERN,
    BPETokenizer,
    MergeStep,
    PairCounts,
    TokenizerFileError,
    course_tokenizer,
    gpt2_byte_alphabet,
    merge_pair,
)
from .checkpoints import (
    CHECKPOINT_FORMAT,
    MODELS_DIR,
    CheckpointError,
    capture_rng_state,
    check_checkpoint_location,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .chat import InstructionChat, chat_loop, instruct_train
from .classification import (
    POOLINGS,
    SOTU_LABELS,
    TRAINABLE_LAYERS,
    ClassificationBatch,
    ClassificationData,
    ClassificationDataset,
    NaiveBayesBaseline,
    TextSplit,
    class_logits,
    classification_accuracy,
    classification_logits,
    classification_loss,
    classify_texts,
    collate_classification,
    count_trainable_parameters,
    create_classification_loaders,
    load_classification_csv,
    majority_baseline,
    make_classifier,
    set_trainable_layers,
    sotu_paragraphs,
)
from .classifier_cli import train_classifier
from .classroom import (
    SubmissionResult,
    grade_notebook,
    grade_submissions,
    student_edition,
    student_notebook,
    teacher_edition,
    teacher_notebook,
)
from .cpu_memory import reuse_freed_memory
from .data import CORPUS_SIZES, load_corpus, load_text
from .dataset import GPTDataset, create_dataloader
from .diagrams import (
    attention_diagram,
    gpt_diagram,
    llama_block_diagram,
    multihead_diagram,
    text_pipeline_diagram,
    transformer_block_diagram,
)
from .distributed import (
    DistributedContext,
    close_distributed,
    init_distributed,
    is_distributed_launch,
    shard_loaders,
    wrap_model,
)
from .embeddings import GPTEmbedding, TokenEmbedding, check_token_ids
from .exercises import (
    CHECK_MIME,
    STRICT_CHECKS_ENV,
    CheckResult,
    Exercise,
    ExerciseCase,
    ExerciseFailed,
    check_exercise,
    exercise_case,
    exercise_cells,
    exercise_ids,
    get_exercise,
    run_check,
)
from .explore import AttentionViewer, SamplingExplorer, collect_attention, next_token_choices
from .generation import (
    generate,
    generate_stream,
    next_token_probs,
    next_token_table,
    prompt_logits,
    sample_next_token,
    text_to_token_ids,
    token_ids_to_text,
)
from .gpt2_bpe import gpt2_table_file, gpt2_tokenizer, install_gpt2_tables, tiktoken_cache_dir
from .gpt2_compat import GPT2_MODELS, download_gpt2_weights, from_hf_gpt2, load_openai_gpt2, to_hf_gpt2
from .llama_compat import from_hf_llama, llama_config_from_hf
from .instructions import (
    EOS_ID,
    FREE_FORM,
    IGNORE_INDEX,
    INSTRUCTION_DATA,
    InstructionDataset,
    PreferenceDataset,
    check_instruction_entries,
    collate_instructions,
    collate_preferences,
    create_instruction_loader,
    create_preference_loader,
    dpo_batch_loss,
    dpo_loss,
    dpo_loss_fn,
    eos_id_of,
    evaluate_exact_match,
    evaluate_preferences,
    format_prompt,
    frozen_copy,
    generate_response,
    generate_responses,
    load_instruction_data,
    make_preference_pairs,
    normalize_answer,
    preference_metrics,
    score_responses,
    sequence_logprobs,
    split_instruction_data,
)
from .kv_cache import KVCache
from .live import LiveTrainingView, interactive_frontend
from .lora import LORA_TARGETS, SWIGLU_LORA_TARGETS, LoRALinear, add_lora, merge_lora
from .model import (
    GELU,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    ModelSummary,
    RMSNorm,
    SwiGLU,
    TransformerBlock,
    model_summary,
)
from .multihead_attention import MultiHeadAttentionWrapper, MultiHeadCausalAttention, apply_rope, rope_cos_sin
from .plotting import plot_attention, plot_attention_heads
from .pipeline import (
    ARCHITECTURES,
    MODEL_SIZES,
    PRESETS,
    RESUMABLE_OPTIONS,
    PretrainResult,
    fine_tuning_base,
    pretrain,
    tokenizer_named,
)
from .progress import ProgressBar
from .token_store import (
    TokenFile,
    TokenFileError,
    cached_token_file,
    corpus_token_file,
    read_token_file,
    text_sha256,
    write_token_file,
)
from .tokenizers import (
    ENDOFTEXT,
    SPECIAL_TOKENS,
    UNKNOWN,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    UnknownWordError,
    build_vocab,
    encode_text,
    join_words,
    split_words,
)
from .training import (
    TrainingConfig,
    TrainingHistory,
    bits_per_byte,
    calc_loss_loader,
    configure_optimizer,
    create_train_val_loaders,
    epoch_batches,
    evaluate_model,
    lr_at_step,
    mixed_precision,
    next_token_loss,
    overfitting_start,
    perplexity,
    plot_losses,
    plot_lr_schedule,
    train_model,
    train_step,
)
from .utils import check_int, check_number, get_device, set_seed

__version__ = "0.3.0"

# In chapter order. The notebooks show the code of the LESSONS' classes; the TOOLS are the machinery
# around them (diagrams, exercises and the teacher's commands, progress bars and live views, the
# command-line pipeline, GPT-2's weights, CPU memory reuse, large-data and multi-process training) that
# notebooks use without showing it line by line.
LESSONS = (
    utils, gpt2_bpe, tokenizers, bpe, data, dataset, embeddings,  # chapter 1
    attention, plotting,  # chapter 2
    multihead_attention,  # chapter 3
    model, generation, training, checkpoints,  # chapter 4
    kv_cache,  # chapter 5
    classification, lora,  # chapter 6
    instructions,  # chapter 7
)  # fmt: skip
TOOLS = (
    diagrams, exercises, classroom, progress, live, explore, pipeline, gpt2_compat, llama_compat, cpu_memory,
    token_store, distributed, classifier_cli, chat,
)  # fmt: skip
MODULES = LESSONS + TOOLS
__all__ = [name for module in MODULES for name in module.__all__]
CHAPTER_OF = {name: getattr(module, "CHAPTERS", {}).get(name, module.CHAPTER) for module in MODULES for name in module.__all__}

# Make the plain `tiktoken.get_encoding("gpt2")` work offline in any program that imports the course.
try:
    install_gpt2_tables()
except RuntimeError:
    pass  # gpt2_tokenizer() raises the same error, with its fix, when the tables are needed
