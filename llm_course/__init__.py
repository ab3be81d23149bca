"""llm_course: the package the course's notebooks build, chapter by chapter.

Each module is one concept, records the chapter that defines it in its CHAPTER constant and lists its
public names in `__all__`. `CHAPTER_OF` maps every public name of the package to its chapter.
"""

from . import attention, data, dataset, embeddings, gpt2_bpe, multihead_attention, tokenizers, utils
from .attention import (
    CausalAttention,
    SelfAttentionV1,
    SelfAttentionV2,
    attention_weights,
    causal_attention,
    causal_mask,
    check_attention_input,
)
from .data import CORPUS_SIZES, load_corpus, load_text
from .dataset import GPTDatasetV1, create_dataloader
from .embeddings import GPTEmbedding, check_token_ids
from .gpt2_bpe import gpt2_tokenizer, install_gpt2_tables, tiktoken_cache_dir
from .multihead_attention import MultiHeadAttentionWrapper, MultiHeadCausalAttention
from .tokenizers import (
    ENDOFTEXT,
    SPECIAL_TOKENS,
    UNKNOWN,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    encode_text,
    join_words,
    split_words,
)
from .utils import get_device, set_seed

__version__ = "0.1.0"

# In chapter order.
MODULES = (utils, gpt2_bpe, tokenizers, data, dataset, embeddings, attention, multihead_attention)
__all__ = [name for module in MODULES for name in module.__all__]
CHAPTER_OF = {name: module.CHAPTER for module in MODULES for name in module.__all__}

# Make the plain `tiktoken.get_encoding("gpt2")` work offline in any program that imports the course.
try:
    install_gpt2_tables()
except RuntimeError:
    pass  # gpt2_tokenizer() raises the same error, with its fix, when the tables are needed
