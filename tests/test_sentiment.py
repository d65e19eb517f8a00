"""What the words say (core/text/sentiment.py): VADER for English, SnowNLP for Chinese, picked by the
utterance's language, judged on the redacted text, stored beside the utterance and carried by
shards."""
from __future__ import annotations

from dataclasses import replace

from core.guard.access import operator
from core.storage.queries import Reader
from core.text.redaction import redact_result
from core.text.sentiment import score, score_result
from core.storage.sessions import SessionWriter
from core.storage.store import Store
from core.text.transcripts import utterance_table, utterances_of, word_table
from core.base.types import Utterance, utterance_id_for
from tests.test_store import RULES, make_result


def test_the_language_picks_the_analysis_and_placeholders_weigh_nothing():
    pos, src = score("thank you so much, this is great", "en")
    assert pos > 0.5 and src == "vader"
    assert score("this is awful and I am furious", None)[0] < -0.5  # no language: English
    zh_pos, zh_src = score("非常感谢，你们的服务很好", "zh")
    assert zh_pos > 0.5 and zh_src == "snownlp"
    assert score("服务太差了，我要投诉", None)[0] < -0.5  # Chinese characters: SnowNLP
    assert score("[card] [phone]", "en") == (None, None) and score("", "en") == (None, None)
    assert score("my card is [card] thanks", "en") == score("my card is thanks", "en")


def test_sentiment_is_stored_beside_the_utterance_on_the_redacted_text(tmp_path):
    r = make_result("ab" * 32)
    sid = r.session_id
    r = replace(r, utterances=(
        Utterance(utterance_id_for(sid, 0, 0), 0, "speaker", 0.1, 1.4,
                  "great, my card is 4111 1111 1111 1111", "en"),
        Utterance(utterance_id_for(sid, 0, 1), 0, "speaker", 2.1, 3.0, "服务太差了，我要投诉", "zh"),
        Utterance(utterance_id_for(sid, 0, 2), 0, "speaker", 3.1, 3.5, "+44 20 7946 0958", "en")))
    r = score_result(redact_result(r))
    store = Store(tmp_path / "db.duckdb")
    store.migrate()
    writer = SessionWriter(store, RULES)
    writer.save(r, writer.start_run("m", "", False, "cpu", "engine", {}))
    t = Reader(store, operator()).transcript(sid)
    assert t.text.tolist() == ["great, my card is [card]", "服务太差了，我要投诉", "[phone]"]
    assert t.sentiment_source.tolist()[:2] == ["vader", "snownlp"]
    assert t.sentiment_source.isna()[2] and t.sentiment.isna()[2]  # nothing left to judge
    assert t.sentiment[0] == score("great, my card is", "en")[0] > 0 and t.sentiment[1] < -0.5
    # a shard carries them: the tables read back are the utterances stored
    back = utterances_of(utterance_table([r]), word_table([r]))
    assert [(u.sentiment, u.sentiment_source) for u in back] == \
        [(u.sentiment, u.sentiment_source) for u in r.utterances]
