"""llm_course: the package the course's notebooks build, chapter by chapter.

Each module is one concept, records the chapter that defines it in its CHAPTER constant and lists its
public names in `__all__`. `CHAPTER_OF` maps every public name of the package to its chapter.
"""

from . import (
    attention,
    checkpoints,
    classroom,
    cpu_memory,
    data,
    dataset,
    distributed,
    embeddings,
    exercises,
    explore,
    generation,
    gpt2_bpe,
    gpt2_compat,
    kv_cache,
    live,
    model,
    multihead_attention,
    plotting,
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
from .checkpoints import (
    CHECKPOINT_FORMAT,
    MODELS_DIR,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
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
from .dataset import GPTDatasetV1, create_dataloader
from .distributed import (
    DistributedContext,
    close_distributed,
    init_distributed,
    is_distributed_launch,
    shard_loaders,
    wrap_model,
)
from .embeddings import GPTEmbedding, check_token_ids
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
from .generation import (
    decoding_layout,
    generate,
    next_token_probs,
    next_token_table,
    prompt_logits,
    sample_next_token,
    text_to_token_ids,
    token_ids_to_text,
)
from .gpt2_bpe import gpt2_tokenizer, install_gpt2_tables, tiktoken_cache_dir
from .gpt2_compat import GPT2_MODELS, download_gpt2_weights, from_hf_gpt2, load_openai_gpt2, to_hf_gpt2
from .kv_cache import KVCache
from .model import (
    GELU,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    ModelSummary,
    TransformerBlock,
    model_summary,
)
from .multihead_attention import MultiHeadAttentionWrapper, MultiHeadCausalAttention
from .plotting import plot_attention, plot_attention_heads
from .token_store import (
    TokenFile,
    TokenFileError,
    TokenWindowDataset,
    cached_token_file,
    corpus_token_file,
    create_token_loaders,
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
    calc_loss_batch,
    calc_loss_loader,
    create_train_val_loaders,
    evaluate_model,
    lr_at_step,
    overfitting_start,
    perplexity,
    plot_losses,
    plot_lr_schedule,
    train_model,
    warmup_cosine_schedule,
)
from .explore import AttentionViewer, SamplingExplorer, collect_attention, next_token_choices
from .live import LiveTrainingView, ProgressLog, interactive_frontend
from .utils import get_device, set_seed

__version__ = "0.2.0"

# In chapter order. The notebooks show the code of the LESSONS' classes; the TOOLS are the machinery
# around them (exercises and the teacher's commands, live views, CPU memory reuse, large-data and
# multi-process training, GPT-2 weights) that notebooks use without showing it line by line.
LESSONS = (
    utils, gpt2_bpe, tokenizers, data, dataset, embeddings,  # chapter 1
    attention, plotting,  # chapter 2
    multihead_attention,  # chapter 3
    model, kv_cache, generation, training, checkpoints,  # chapter 4
)
TOOLS = (exercises, classroom, live, explore, cpu_memory, token_store, distributed, gpt2_compat)
MODULES = LESSONS + TOOLS
__all__ = [name for module in MODULES for name in module.__all__]
CHAPTER_OF = {name: module.CHAPTER for module in MODULES for name in module.__all__}

# Make the plain `tiktoken.get_encoding("gpt2")` work offline in any program that imports the course.
try:
    install_gpt2_tables()
except RuntimeError:
    pass  # gpt2_tokenizer() raises the same error, with its fix, when the tables are needed
