"""Item text from RecBole item features: one readable line per item id, built once per dataset."""
import logging

import numpy as np
from recbole.utils import FeatureType

from rporec_recbole.validation import ConfigValueError

logger = logging.getLogger(__name__)

# Angle brackets and chat markers in item text are data, never structure: a title such as "<answer>" must not
# close a tag or open a chat turn, so brackets are replaced by look-alike guillemets.
_STRUCTURE_CHARS = str.maketrans({"<": "‹", ">": "›"})


def sanitize_text(text, max_chars):
    text = " ".join(str(text).split()).translate(_STRUCTURE_CHARS)
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def _field_values(dataset, field):
    """Readable values of ``field`` for every internal item id (index 0 is padding)."""
    values = dataset.item_feat[field]
    values = values.numpy() if hasattr(values, "numpy") else values
    ftype = dataset.field2type[field]
    if ftype == FeatureType.TOKEN:
        return [str(dataset.id2token(field, int(v))) if v else "" for v in values]
    if ftype == FeatureType.TOKEN_SEQ:
        return [" ".join(str(dataset.id2token(field, int(t))) for t in row if t) for row in values]
    if ftype in (FeatureType.FLOAT, FeatureType.FLOAT_SEQ):
        return [" ".join(f"{x:g}" for x in np.atleast_1d(row)) for row in values]
    raise ValueError(f"item text field {field!r} has unsupported type {ftype}")


def build_item_texts(dataset, title_field, extra_fields=(), max_chars=120):
    """Return a list ``texts[item_id]``: "title (extra1) | extra2 ...", sanitized; padding id 0 gives "".

    Items with no title fall back to their original token id, so no item is ever textless.
    """
    if dataset.item_feat is None or title_field not in dataset.item_feat:
        available = [] if dataset.item_feat is None else list(dataset.item_feat.columns)
        raise ConfigValueError(
            f"item text field {title_field!r} is not loaded for dataset {dataset.dataset_name!r} "
            f"(item fields loaded: {available}). Set `item_title_field` and add it to `load_col: item:`."
        )
    columns = [_field_values(dataset, title_field)]
    for field in extra_fields:
        if field in dataset.item_feat:
            columns.append(_field_values(dataset, field))
        else:
            logger.warning("item text field %r not loaded; left out of item text", field)
    raw_ids = dataset.field2id_token[dataset.iid_field]
    texts = [""]
    empty = 0
    for item_id in range(1, dataset.item_num):
        title = columns[0][item_id].strip()
        if not title:
            empty += 1
            title = f"item {raw_ids[item_id]}"
        extras = [col[item_id].strip() for col in columns[1:] if col[item_id].strip()]
        texts.append(sanitize_text(" | ".join([title] + extras), max_chars))
    if empty:
        logger.warning("%d items have no %r; their raw id stands in as text", empty, title_field)
    return texts
