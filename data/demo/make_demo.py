#!/usr/bin/env python3
"""Make the bundled demo sessions in this folder: synthetic calls and voice diaries.

Every voice is synthetic (no recordings of real people): flite for English (its voices are
speech pocketsphinx recognises, so the Session page shows the words that were said),
espeak-ng for Mandarin. Each line of a script is spoken with its own pitch, speed and
loudness, from the speaker's base voice, a mood preset and a little seeded jitter, so the
audio differs from moment to moment the way the words do.

Calls are stereo, one speaker per channel (left = agent, right = customer, except where the
manifest says otherwise); turns alternate with natural gaps, now and then a short overlap,
a backchannel ("mm-hm") or an interruption that cuts the other speaker off. Diaries are mono.
Volume is applied after synthesis, so one call is recorded far too quietly and one has its
shouting clipped, to show the quality flags.

Outputs (all beside this script): the audio files, manifest.csv, lines.csv (the transcript
with times and intended moods) and README.md.
Deterministic: fixed seed, and files are muxed bit-exact, so a rerun gives identical bytes
(and so identical session ids) with the same flite, espeak-ng and FFmpeg versions.

Usage: python data/demo/make_demo.py [--out DIR]
Needs: flite and espeak-ng on PATH, numpy, PyAV (`av`).
"""
from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SEED = 20261102
SR = 22_050  # espeak-ng's native rate; everything is composed here, then resampled on encode
FLITE_SR = 16_000  # flite's slt, rms and awb voices
HERE = Path(__file__).resolve().parent

# ---------------------------------------------------------------------------------------------
# Voices and moods
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    espeak: str  # espeak-ng voice, e.g. "en-us+f3" (Mandarin)
    pitch: int = 50  # -p, 0..99
    speed: int = 165  # -s, words per minute
    level: float = 0.5  # peak level of a neutral line (0..1 full scale)
    flite: str | None = None  # flite voice (slt, rms, awb): used instead of espeak-ng
    f0: float = 0.0  # flite's mean pitch (Hz); a mood's pitch moves it by that many percent


@dataclass(frozen=True)
class Mood:
    pitch: int = 0  # added to the voice's pitch
    speed: float = 1.0  # multiplies the voice's speed
    gain: float = 1.0  # multiplies the voice's level
    word_gap: int = 0  # espeak -g, extra pause between words (10 ms units)


MOODS = {
    "neutral": Mood(),
    "friendly": Mood(pitch=6, speed=1.04, gain=1.05),
    "happy": Mood(pitch=12, speed=1.10, gain=1.15),
    "excited": Mood(pitch=20, speed=1.20, gain=1.35),
    "calm": Mood(pitch=-4, speed=0.92, gain=0.85),
    "relieved": Mood(pitch=-2, speed=0.95, gain=0.9),
    "annoyed": Mood(pitch=6, speed=1.12, gain=1.3),
    "angry": Mood(pitch=16, speed=1.28, gain=1.7),
    "shouting": Mood(pitch=26, speed=1.35, gain=3.6),  # clips when the session allows it
    "anxious": Mood(pitch=10, speed=1.25, gain=1.05),
    "confused": Mood(pitch=4, speed=0.78, gain=0.8, word_gap=2),
    "apologetic": Mood(pitch=-6, speed=0.9, gain=0.8),
    "sad": Mood(pitch=-14, speed=0.72, gain=0.55, word_gap=3),
    "tired": Mood(pitch=-10, speed=0.78, gain=0.6, word_gap=2),
}


@dataclass
class Line:
    who: str  # key into the session's voices
    text: str
    mood: str = "neutral"
    gap: float | None = None  # silence before this line (s); None = a seeded natural gap
    overlap: float = 0.0  # start this many seconds before the previous line ends
    interrupt: float | None = None  # start this far (s) into the previous line and cut it off
    backchannel: float | None = None  # place at this fraction of the previous line; no turn


@dataclass
class Session:
    file: str
    kind: str  # "call" or "diary"
    language: str
    scenario: str
    voices: dict[str, Voice]
    channels: tuple[str, ...]  # voice key per channel, left to right
    lines: list[Line]
    codec: str
    rate: int
    bit_rate: int | None
    manifest: dict[str, str]
    gain: float = 1.0  # whole-recording gain (a quiet line, a hot line)
    clip: bool = False  # hard-clip overs instead of limiting them
    noise: float = 0.0015  # background hiss, RMS before `gain`
    pause: tuple[float, float] = (0.25, 0.8)  # range of the natural gap between turns
    notes: str = ""
    duration_s: float = field(default=0.0, init=False)


def A(text, mood="friendly", **kw):
    return Line("agent", text, mood, **kw)


def C(text, mood="neutral", **kw):
    return Line("customer", text, mood, **kw)


def S(text, mood="neutral", **kw):
    return Line("speaker", text, mood, **kw)


# ---------------------------------------------------------------------------------------------
# Scripts
# ---------------------------------------------------------------------------------------------

ANA = Voice("en-us+f3", pitch=55, speed=165, level=0.45, flite="slt", f0=175)
BEN = Voice("en-us+m3", pitch=42, speed=160, level=0.45, flite="rms", f0=105)
# Mandarin: espeak-ng turns characters into tone-numbered pinyin; the plain "cmn" voice then
# reads that pinyin as English ("ni three"), "cmn-latn-pinyin" reads it as Mandarin.
ZH = "cmn-latn-pinyin"
CHEN = Voice(ZH, pitch=45, speed=170, level=0.45)
DAI = Voice(ZH + "+f4", pitch=58, speed=170, level=0.45)


def call_billing_double_charge() -> list[Line]:
    return [
        A("Thank you for calling Northwind Mobile billing, this is Ana. "
          "Can I start with your account number, please?"),
        C("Yes, hi. It's four two seven, nine nine one, zero three."),
        A("Thank you. And can you confirm the name on the account?"),
        C("Daniel Price."),
        A("Thanks, Mr Price. How can I help you today?"),
        C("I've been charged twice this month. Two payments of forty nine ninety nine went "
          "out on the first, and I only have one line.", "annoyed"),
        A("I'm sorry about that. Let me pull up your billing history.", "apologetic"),
        C("This is the second time this year, to be honest. Last time it took three weeks "
          "to sort out.", "annoyed"),
        A("mm-hm.", "neutral", backchannel=0.55),
        A("I understand, that's really frustrating. Okay, I can see both payments here, one "
          "at six in the morning, and one at six oh two."),
        C("So you can see it. Good.", "annoyed"),
        A("Yes. It looks like the payment was retried after a timeout from your bank, even "
          "though the first one had already gone through, so"),
        C("So it's your system, not my bank.", "annoyed", interrupt=4.2),
        A("That's correct. The error is on our side, and I'm going to refund the duplicate "
          "payment in full.", "calm"),
        C("Okay. How long will that take?"),
        A("The refund goes back to the same card, usually within three to five working days."),
        C("Three to five days. And I won't get a late fee or anything, if my balance looks "
          "odd in the meantime?", "anxious"),
        A("No, nothing will change on your account. I'll also add a note so it can't retry "
          "like that again.", "calm"),
        C("Can you add some kind of credit as well? It is the second time.", "annoyed"),
        A("Let me see what I can do. Yes, I can apply a ten dollar goodwill credit to next "
          "month's bill."),
        C("Ten dollars. Well, that's something, I suppose."),
        A("I'll send you an email confirming the refund and the credit in the next few "
          "minutes."),
        C("Great, thank you.", "relieved"),
        A("Is there anything else I can help you with today?"),
        C("No, that's everything. Thanks, Ana.", "friendly"),
        A("Thank you for your patience, Mr Price. Have a good day."),
    ]


def call_delivery_delay() -> list[Line]:
    return [
        A("Thanks for calling Northwind support, my name is Ben. How can I help?"),
        C("Finally! I have been on hold for forty minutes!", "shouting", gap=0.2),
        A("I'm really sorry about the wait. What can I do", "apologetic"),
        C("My order was supposed to arrive last Tuesday. Last Tuesday! It's a birthday "
          "present, and the party is tomorrow!", "shouting", interrupt=1.3),
        A("I understand. Can you give me the order number, and I'll find out exactly where "
          "it is?", "calm"),
        C("It's P P seven seven four, two zero one. I've given it to three people already!",
          "angry"),
        A("Thank you. Okay, I have it here. I can see it left our warehouse on the third.",
          "calm"),
        C("And then what? It just vanished? Nobody tells me anything! Every time I check the "
          "tracking it just says in transit!", "shouting", overlap=0.4),
        A("I know, and that's not good enough. It looks like the parcel was sent to the "
          "wrong depot, and then it had to be redirected.", "apologetic"),
        C("That is not my problem! I paid for express delivery! I want my money back!",
          "shouting", interrupt=3.0),
        A("You're absolutely right, and you'll get the express fee refunded, no matter what.",
          "calm"),
        C("Okay. Fine. But where is it now?", "annoyed", gap=1.4),
        A("It arrived at your local depot this morning, at seven fifteen. It's scanned, and "
          "ready to go.", "calm"),
        C("This morning. So it could still come today?", "anxious"),
        A("I can book it on a priority van for this afternoon, between two and six."),
        C("Between two and six. I'm home then.", "neutral"),
        A("Great. I'll also mark it as signature not required, so the driver can leave it "
          "with a neighbor if needed."),
        C("No, please, I want it handed to me. It's fragile.", "anxious", interrupt=3.5),
        A("Of course. I'll keep the signature, and I'll add a note that it's fragile.", "calm"),
        C("Okay. Thank you. Sorry for shouting earlier, it's just been a really long week.",
          "apologetic", gap=1.0),
        A("No need to apologize at all. I would be upset too.", "calm"),
        C("So the refund for the express fee, how does that work?", "calm"),
        A("It goes back to your original payment method. You should see it within three "
          "days. I'll email you the confirmation and the delivery slot."),
        C("Great. And if it doesn't show up by six?", "calm"),
        A("Then call us back and quote reference B E N four four, and you'll come straight "
          "to my team, no queue."),
        C("Okay. That's actually really helpful. Thank you, Ben.", "happy"),
        A("You're welcome. I hope the party goes well tomorrow.", "happy"),
        C("Thanks. Me too. Bye!", "happy"),
    ]


def call_plan_upgrade() -> list[Line]:
    return [
        A("Good afternoon, Northwind Mobile, Ana speaking. How can I help?"),
        C("Hi Ana! I got a text saying I'm eligible for an upgrade, and I'd love to hear "
          "about it.", "happy"),
        A("Wonderful, let's have a look. Can I have your account number?", "happy"),
        C("Sure, it's five five one, three zero eight, seven two.", "friendly"),
        A("Thank you, Mr Okafor. Yes, you've been with us for four years, so there's a "
          "loyalty upgrade waiting for you."),
        C("Four years already? Time flies.", "happy"),
        A("It does! So, the new plan gives you unlimited data, calls to thirty countries, and "
          "it's actually five dollars cheaper than what you're paying now.", "happy"),
        C("Cheaper? Really? That's amazing!", "excited", overlap=0.3),
        A("Really. And it comes with a new phone, at no upfront cost, if you'd like one."),
        C("Oh wow. My screen has been cracked since the summer, so yes, absolutely!",
          "excited"),
        A("Ha, then good timing. Would you like the standard model, or the larger one?",
          "happy"),
        C("The larger one, please. I watch a lot of football on it.", "happy"),
        A("Good choice. What color would you like? We have black, silver, and a dark green."),
        C("Green! My daughter is going to be so jealous.", "excited", interrupt=4.0),
        A("Ha! Okay, the large model in green, on the unlimited plan. Your monthly payment "
          "will be forty four dollars, including the phone.", "happy"),
        C("That's perfect. Is there a contract?", "neutral"),
        A("It's twenty four months, and you can upgrade again after eighteen."),
        C("That's fair. Can I keep my number?", "neutral"),
        A("Yes, your number stays exactly the same. The phone will arrive on Thursday, and "
          "your old one keeps working until you switch the SIM card."),
        C("Thursday, brilliant. You've made my day, honestly.", "happy"),
        A("I'm so glad to hear that! I'll send the order summary to your email right now.",
          "happy"),
        C("mm-hm. Got it.", "friendly", backchannel=0.8),
        C("Thank you so much, Ana. Have a great afternoon!", "excited"),
        A("You too, and enjoy the new phone!", "happy"),
    ]


def call_router_confused() -> list[Line]:
    return [
        A("Northwind support, this is Ben. How can I help you today?"),
        C("Oh, hello. Yes. I'm not sure I've rung the right number.", "confused", gap=1.0),
        A("No problem at all. Tell me what's going on, and we'll figure it out together.",
          "calm"),
        C("My grandson set up the new internet box, and now the television doesn't work. "
          "Or is it the computer. I'm not sure which one.", "confused"),
        A("Okay. Let's take it one step at a time. Can you see the box with the lights on it?",
          "calm"),
        C("The white one? Or the black one? There are two boxes.", "confused"),
        A("The white one. It should have the word Northwind on the front.", "calm"),
        C("Just a moment.", "neutral"),
        C("Yes. Yes, here it is.", "neutral", gap=3.0),
        A("Great. What color are the lights on the front?", "calm"),
        C("There is a green one, and a, I think it's orange. Is orange bad?", "anxious"),
        A("Orange just means it isn't connected to the internet yet. Nothing is broken.",
          "calm"),
        C("Oh, thank goodness. I thought I'd broken it.", "relieved"),
        A("Not at all. On the back, there's a grey cable. Can you check it's pushed in all "
          "the way?", "calm"),
        C("The grey one. There's a grey one and a yellow one. Which one do you mean?",
          "confused"),
        A("The grey one, it's a little thicker, and it goes into the socket on the wall.",
          "calm"),
        C("Oh! It was only half in. I've pushed it now. It clicked.", "happy", gap=2.0),
        A("Perfect. Now give it about a minute. The orange light should turn green."),
        C("It's blinking. Is blinking good, or bad?", "confused", gap=4.0),
        A("Blinking is good. It means it's connecting.", "calm"),
        C("Oh, now it's green! Both of them are green.", "happy", gap=2.0),
        A("Excellent. Can you try the television now?", "happy"),
        C("Let me see. Yes! The news is on. Oh, that's wonderful.", "excited", gap=2.0),
        A("Brilliant. You did all the hard work.", "happy"),
        C("You've been very patient with me, young man. Thank you.", "happy"),
        A("It's my pleasure. If the light goes orange again, just check that grey cable "
          "first.", "friendly"),
        C("The grey cable. I'll write that down. Grey cable.", "calm"),
        A("Perfect. Have a lovely evening."),
        C("You too, dear. Goodbye.", "happy"),
    ]


def call_broadband_outage_zh() -> list[Line]:
    return [
        A("您好，北风通信技术支持，我是小陈，请问有什么可以帮您？"),
        C("你好。我家的宽带从昨天晚上就断了，到现在还没好！", "angry"),
        A("非常抱歉给您带来不便。请问您的宽带账号是多少？", "apologetic"),
        C("账号是八八六，三二零，一五七。我已经打了两次电话了！", "annoyed"),
        A("好的，我马上帮您查一下，请您稍等。", "calm"),
        C("我明天早上要开视频会议，如果还没有网，我真的不知道怎么办。", "anxious", gap=2.0),
        A("我理解您的着急。系统显示，您那个小区昨天晚上有一段光缆被施工挖断了。", "calm"),
        C("挖断了？那为什么没有人通知我们？", "angry", interrupt=3.5),
        A("这确实是我们的问题，通知短信没有发出去，我向您道歉。", "apologetic"),
        C("那到底什么时候能修好？", "annoyed"),
        A("维修师傅已经在现场了，预计今天下午四点以前恢复。", "calm"),
        C("下午四点。你确定吗？", "annoyed"),
        A("我会一直跟进。如果四点还没有恢复，我会亲自给您打电话。", "calm"),
        C("好吧。那这两天的网费怎么算？", "neutral"),
        A("我们会按照中断的时间给您补偿，另外再送您一个月的免费流量包。", "friendly"),
        C("嗯，这样还可以。那我现在能不能先用手机流量开热点？", "neutral"),
        A("可以的，流量包我现在就给您开通，马上生效。", "friendly"),
        C("好，收到短信了。谢谢你啊。", "relieved", gap=1.5),
        A("不客气。刚才让您着急了，真的很抱歉。", "apologetic"),
        C("没事，你态度挺好的。希望下午能修好。", "calm"),
        A("一定会的。祝您明天的会议顺利，再见。", "happy"),
        C("再见。", "friendly"),
    ]


def call_refund_followup() -> list[Line]:
    return [
        A("Northwind Mobile billing, Ana speaking."),
        C("Hi Ana, it's Daniel Price again. I called last week about being charged twice.",
          "neutral"),
        A("Hello Mr Price, yes, I remember. I can see my note here. How can I help?", "happy"),
        C("The refund came through, thank you. But the ten dollar credit isn't on my new "
          "bill.", "annoyed"),
        A("Let me check that for you. One moment, please.", "calm"),
        A("You're right. The credit was approved, but it was scheduled for the wrong "
          "billing cycle.", "apologetic", gap=2.5),
        C("Ah. So it's coming next month instead?", "neutral"),
        A("It was, but I've just moved it onto this bill. Your new total is thirty nine "
          "ninety nine."),
        C("Oh, that was quick. Thanks.", "happy"),
        A("And I can confirm the automatic retry problem has been fixed on your account.",
          "calm"),
        C("Good. That was my main worry, honestly.", "relieved"),
        A("Completely understandable. You shouldn't see any more duplicate payments."),
        C("Great. Could you send me a corrected bill by email?", "neutral"),
        A("Of course, it's on its way now. It should arrive within a few minutes."),
        C("Got it, it's just come in. Everything looks right.", "happy", gap=2.0),
        A("Wonderful. Is there anything else I can do for you today?", "happy"),
        C("No, that's all. Thanks for sorting it out properly this time.", "friendly"),
        A("My pleasure, Mr Price. Have a great rest of your week.", "happy"),
        C("You too. Bye now.", "friendly"),
    ]


def call_roaming_charges_zh() -> list[Line]:
    return [
        A("您好，北风通信账单服务，我是小戴，很高兴为您服务。"),
        C("你好，我想问一下，我这个月的账单怎么多了三百多块钱？", "confused"),
        A("好的，请您提供一下手机号码，我帮您查询。"),
        C("一三九，零二一七，五五八三。", "neutral"),
        A("谢谢。我看到您上个月二十号到二十五号，在日本使用了国际漫游数据。", "calm"),
        C("日本？对，我去出差了。可是我出发前开了漫游套餐啊。", "confused"),
        A("我帮您查一下套餐记录。您开通的是韩国和新加坡的套餐，不包括日本。", "calm", gap=1.5),
        C("什么？营业厅的人跟我说是亚洲通用的！", "angry", interrupt=3.0),
        A("非常抱歉，这个情况我理解。我帮您看看能不能申请调整。", "apologetic"),
        C("三百多块钱，太不合理了。", "annoyed"),
        A("您说得对。因为您当时已经办理了套餐，我可以按照日本套餐的价格为您重新计算。", "calm"),
        C("那重新计算以后是多少钱？", "neutral"),
        A("日本套餐每天二十五元，六天一共一百五十元，可以退还您一百八十六元。", "friendly"),
        C("退一百八十六元。嗯，这样我能接受。", "relieved"),
        A("好的，退款会在三个工作日内返还到您的话费账户。"),
        C("那下次出国，我应该怎么办？", "neutral"),
        A("出发前可以发短信到一零零八六，回复国家名称，系统会推荐正确的套餐。", "friendly"),
        C("好的，我记住了。谢谢你，小戴。", "happy"),
        A("不客气，祝您生活愉快，再见。", "happy"),
        C("再见。", "friendly"),
    ]


def diary_p001_first() -> list[Line]:
    return [
        S("Okay. First entry. My therapist suggested I try talking instead of writing, so, "
          "here goes."),
        S("Today was fine, I guess. Long.", "tired"),
        S("I woke up at six, before the alarm, and couldn't get back to sleep.", "tired"),
        S("Work was mostly meetings. I don't think I said a single useful thing all day.",
          "sad"),
        S("At lunch I walked to the park, which helped a bit. The trees are all orange now.",
          "calm"),
        S("I keep telling myself I'll go to bed earlier, and then it's midnight and I'm still "
          "scrolling on my phone.", "tired"),
        S("My sister called in the evening. We talked about Mum's birthday, and that was "
          "nice, actually.", "friendly"),
        S("I laughed properly for the first time this week.", "happy"),
        S("So. Not a bad day. Just a tired one.", "tired"),
        S("Goals for tomorrow. Phone down by eleven, and walk to work instead of taking the "
          "bus.", "neutral"),
        S("Okay. That's it for today. Goodnight.", "calm"),
    ]


def diary_p001_stressed() -> list[Line]:
    return [
        S("It's late, and I'm still wound up, so I'm recording this instead of lying awake.",
          "anxious"),
        S("The project deadline moved. Again. Forward this time, not back. We now have until "
          "Monday.", "anxious"),
        S("My manager announced it in front of everyone like it was good news.", "angry"),
        S("I just sat there. I didn't say anything. I wish I had said something.", "sad"),
        S("Then I snapped at Tom over nothing. Over a spreadsheet. And I saw his face, and I "
          "felt awful.", "angry"),
        S("I apologised afterwards. He was kind about it, which somehow made it worse.",
          "sad"),
        S("My heart has been racing all evening. I skipped dinner. I know, I know.",
          "anxious"),
        S("I did walk to work on Tuesday and Wednesday, so, one goal kept.", "neutral"),
        S("Okay. Breathe. What can I actually control?", "calm", gap=2.5),
        S("I can ask for help with the testing. I can say no to the Friday meeting.",
          "neutral"),
        S("And I can go to sleep now, and not check my email until eight.", "calm"),
        S("That's the plan. Goodnight.", "tired"),
    ]


def diary_p001_good_week() -> list[Line]:
    return [
        S("Friday night! And I actually feel good, so I wanted to record this one.", "happy"),
        S("We shipped the project on Monday. Not perfect, but it works, and the client loved "
          "the demo.", "excited"),
        S("My manager thanked the team by name, and she mentioned my testing plan. I nearly "
          "fell off my chair.", "happy"),
        S("Tom and I had lunch together on Wednesday. We laughed about the spreadsheet "
          "thing. All good.", "happy"),
        S("I've been going to bed before midnight all week. Well. Five nights out of seven.",
          "calm"),
        S("And I'm sleeping better. I haven't woken up at six once.", "relieved"),
        S("Tomorrow I'm taking the train to see my sister, and we're baking a cake for Mum's "
          "birthday.", "excited"),
        S("Looking back at the last two weeks, I think talking out loud really helps.",
          "calm"),
        S("It's easier to notice when things get bad. And, honestly, when they get better.",
          "happy"),
        S("Okay. Goodnight, future me. Be nice to yourself.", "calm"),
    ]


def diary_p002_zh() -> list[Line]:
    return [
        S("今天是星期天，下了一整天的雨，我一直待在家里。", "tired"),
        S("来这个城市已经三个月了，还是有点不习惯。", "sad"),
        S("早上给妈妈打了视频电话，她说家里的桂花都开了。", "calm"),
        S("挂了电话以后，我一个人坐了很久，有点想哭。", "sad"),
        S("工作上也不太顺利，上周的报告被领导退回来两次。", "annoyed"),
        S("我知道他是为了我好，可是心里还是很委屈。", "sad"),
        S("下午雨停了，楼下的邻居阿姨给我送来一碗饺子。", "calm", gap=2.0),
        S("她说，一个人在外面，要好好吃饭。", "friendly"),
        S("饺子是韭菜鸡蛋馅的，跟我妈包的味道很像。", "happy"),
        S("吃完饺子，心情好了很多。", "happy"),
        S("明天我想早点起床，去公园跑步，然后把报告重新改一遍。", "neutral"),
        S("好了，今天就说到这里。晚安。", "calm"),
    ]


def sessions() -> list[Session]:
    def call(file, language, scenario, agent, customer, lines, codec, rate, bit_rate,
             manifest, channels=("agent", "customer"), **kw):
        return Session(file, "call", language, scenario, {"agent": agent, "customer": customer},
                       channels, lines, codec, rate, bit_rate, manifest, **kw)

    def diary(file, language, scenario, voice, lines, codec, rate, bit_rate, manifest, **kw):
        return Session(file, "diary", language, scenario, {"speaker": voice}, ("speaker",),
                       lines, codec, rate, bit_rate, manifest, pause=(0.9, 2.2),
                       noise=0.0008, **kw)

    def m(agent, customer, team, at, tags, roles=""):
        return dict(agent_id=agent, customer_id=customer, team=team, recorded_at=at,
                    tags=tags, roles=roles)

    return [
        call("call01_billing_double_charge.wav", "English",
             "Billing dispute: charged twice; refund and goodwill credit",
             ANA, Voice("en-gb", pitch=40, speed=170, flite="awb", f0=110), call_billing_double_charge(),
             "pcm_mulaw", 8000, None,
             m("a-ana", "c-1042", "billing", "2026-11-02T09:42:00", "billing;dispute;refund")),
        call("call02_delivery_delay.mp3", "English",
             "Late delivery: customer shouts and interrupts, calms down once it is fixed "
             "(shouting is clipped)",
             BEN, Voice("en-us+f4", pitch=60, speed=170, level=0.7, flite="slt", f0=200), call_delivery_delay(),
             "libmp3lame", 16000, 32000,
             m("a-ben", "c-2218", "support", "2026-11-03T14:05:00",
               "support;delivery;escalation"),
             clip=True),
        call("call03_plan_upgrade.opus", "English",
             "Happy loyalty upgrade: new plan and phone",
             ANA, Voice("en-us+m2", pitch=38, speed=175, level=0.5, flite="awb",
                                   f0=100), call_plan_upgrade(),
             "libopus", 16000, 24000,
             m("a-ana", "c-3051", "billing", "2026-11-04T11:20:00", "billing;upgrade;sales")),
        call("call04_router_setup_confused.mp3", "English",
             "Confused elderly customer; patient step-by-step router fix",
             BEN, Voice("en-gb+f5", pitch=62, speed=150, level=0.45, flite="slt",
                                  f0=190), call_router_confused(),
             "libmp3lame", 16000, 32000,
             m("a-ben", "c-4127", "support", "2026-11-05T17:35:00", "support;onboarding")),
        call("call05_broadband_outage_zh.opus", "Mandarin",
             "宽带故障 broadband outage: frustrated customer, compensation; "
             "customer on the LEFT channel",
             CHEN, Voice(ZH + "+f2", pitch=62, speed=175, level=0.5),
             call_broadband_outage_zh(),
             "libopus", 16000, 24000,
             m("a-chen", "c-5560", "support", "2026-11-09T10:30:00",
               "support;outage;mandarin", roles="customer;agent"),
             channels=("customer", "agent")),
        call("call06_refund_followup_quiet.wav", "English",
             "Follow-up on call01's refund, recorded far too quietly (too_quiet flag)",
             ANA, Voice("en-gb", pitch=40, speed=170, flite="awb", f0=110), call_refund_followup(),
             "pcm_mulaw", 8000, None,
             m("a-ana", "c-1042", "billing", "2026-11-11T15:48:00",
               "billing;refund;follow-up"),
             gain=0.07),
        call("call07_roaming_charges_zh.mp3", "Mandarin",
             "漫游费 roaming charges: confused then angry customer, partial refund",
             DAI, Voice(ZH + "+m3", pitch=35, speed=175, level=0.5),
             call_roaming_charges_zh(),
             "libmp3lame", 16000, 32000,
             m("a-dai", "c-6613", "billing", "2026-11-12T13:15:00",
               "billing;roaming;mandarin")),
        diary("diary_p001_2026-11-02.m4a", "English",
              "First entry: tired, flat, a little hope at the end",
              Voice("en-gb+f3", pitch=52, speed=160, level=0.5, flite="slt", f0=165), diary_p001_first(),
              "aac", 16000, 32000,
              m("", "p-001", "wellbeing", "2026-11-02T21:30:00", "diary;sleep")),
        diary("diary_p001_2026-11-06.m4a", "English",
              "Stressed: deadline moved, anger and guilt, then a plan",
              Voice("en-gb+f3", pitch=52, speed=160, level=0.5, flite="slt", f0=165), diary_p001_stressed(),
              "aac", 16000, 32000,
              m("", "p-001", "wellbeing", "2026-11-06T23:10:00", "diary;stress;work")),
        diary("diary_p002_2026-11-08_zh.ogg", "Mandarin",
              "想家 homesick and hurt, warmed by a neighbour's dumplings",
              Voice(ZH + "+f3", pitch=55, speed=165, level=0.5), diary_p002_zh(),
              "libopus", 16000, 20000,
              m("", "p-002", "wellbeing", "2026-11-08T21:05:00", "diary;homesick;mandarin")),
        diary("diary_p001_2026-11-13.m4a", "English",
              "Good week: project shipped, sleeping better, upbeat",
              Voice("en-gb+f3", pitch=52, speed=160, level=0.5, flite="slt", f0=165), diary_p001_good_week(),
              "aac", 16000, 32000,
              m("", "p-001", "wellbeing", "2026-11-13T20:45:00", "diary;work;family")),
    ]


# ---------------------------------------------------------------------------------------------
# Synthesis and mixing
# ---------------------------------------------------------------------------------------------


def espeak(text: str, voice: str, pitch: int, speed: int, word_gap: int) -> np.ndarray:
    """One line through espeak-ng, as float32 at SR, peak-normalised to 1."""
    cmd = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-g", str(word_gap),
           "--stdout", "--stdin"]
    wav = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=True).stdout
    x, rate = _read_wav(wav)
    if rate != SR:
        raise RuntimeError(f"espeak-ng produced {rate} Hz, expected {SR}")
    x = np.trim_zeros(x)  # espeak pads a little silence; our gaps are explicit
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r} ({voice})")
    return (x / peak).astype(np.float32)


def flite(text: str, voice: str, f0: float, stretch: float) -> np.ndarray:
    """One line through flite at mean pitch `f0` (Hz), `stretch` times slower, as float32 at
    SR (from flite's 16 kHz, linearly interpolated), peak-normalised to 1."""
    cmd = ["flite", "-voice", voice, "--setf", f"int_f0_target_mean={f0:.1f}",
           "--setf", f"duration_stretch={stretch:.3f}", "-t", text, "-o", "/dev/stdout"]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    x, rate = _read_wav(wav)
    if rate != FLITE_SR:
        raise RuntimeError(f"flite voice {voice} produced {rate} Hz, expected {FLITE_SR}")
    x = np.trim_zeros(x)
    n = int(round(x.size * SR / rate))
    x = np.interp(np.arange(n) * (rate / SR), np.arange(x.size), x).astype(np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        raise RuntimeError(f"flite produced silence for {text!r} ({voice})")
    return (x / peak).astype(np.float32)


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng --stdout writes a streaming WAV (sizes unset): walk the chunks by hand."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("the synthesiser did not write a WAV")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"fmt ":
            rate = int.from_bytes(data[pos + 12:pos + 16], "little")
        elif tag == b"data":
            body = data[pos + 8:]
            body = body[:len(body) // 2 * 2]
            return np.frombuffer(body, "<i2").astype(np.float32) / 32768.0, rate
        pos += 8 + size
    raise RuntimeError("no data chunk in espeak-ng output")


@dataclass
class Rendered:
    text: str
    audio: np.ndarray
    level: float


def render_lines(session: Session, rng: np.random.Generator, pool: ThreadPoolExecutor):
    """Pick each line's prosody (seeded), then synthesise all lines in parallel."""
    jobs = []
    for line in session.lines:
        voice, mood = session.voices[line.who], MOODS[line.mood]
        pitch = int(np.clip(voice.pitch + mood.pitch + rng.integers(-4, 5), 0, 99))
        speed = int(round(voice.speed * mood.speed * rng.uniform(0.94, 1.06)))
        level = voice.level * mood.gain * rng.uniform(0.88, 1.12)
        if voice.flite:
            f0 = voice.f0 * (1 + (pitch - voice.pitch) / 100)
            stretch = voice.speed / speed * (1 + mood.word_gap * 0.04)
            job = pool.submit(flite, line.text, voice.flite, f0, stretch)
        else:
            job = pool.submit(espeak, line.text, voice.espeak, pitch, speed, mood.word_gap)
        jobs.append((line, job, level))
    return [(line, Rendered(line.text, fut.result(), level)) for line, fut, level in jobs]


def compose(session: Session, rendered, rng: np.random.Generator):
    """Lay the lines out on their channels.

    Returns (channels, n) float32 at SR, and per line (channel, start_s, end_s, line) as heard
    (an interrupted line ends where it was cut off)."""
    placed: list[list] = []  # [channel, start_sample, audio, line]
    t = int(rng.uniform(0.5, 1.0) * SR)  # end of the conversation so far
    prev = None  # last full turn, the same list as its entry in `placed`
    for line, r in rendered:
        ch = session.channels.index(line.who)
        x = r.audio * r.level
        if line.backchannel is not None and prev is not None:
            start = prev[1] + int(line.backchannel * prev[2].size)
            placed.append([ch, start, x, line])
            continue
        if line.interrupt is not None and prev is not None:
            start = prev[1] + int(line.interrupt * SR)
            keep = start + int(0.35 * SR) - prev[1]  # the other side trails off, then stops
            if keep < prev[2].size:
                fade = np.linspace(1.0, 0.0, int(0.08 * SR), dtype=np.float32)
                cut = prev[2][:keep].copy()
                cut[-fade.size:] *= fade
                prev[2] = cut
            t = max(start, prev[1] + prev[2].size)
        elif line.overlap and prev is not None:
            start = t - int(line.overlap * SR)
        else:
            gap = line.gap if line.gap is not None else rng.uniform(*session.pause)
            start = t + int(gap * SR)
        prev = [ch, start, x, line]
        placed.append(prev)
        t = max(t, start + x.size)
    n = t + int(rng.uniform(0.6, 1.2) * SR)
    out = np.zeros((len(session.channels), n), np.float32)
    for ch, start, x, _ in placed:
        out[ch, start:start + x.size] += x[:n - start]
    out += rng.normal(0.0, session.noise, out.shape).astype(np.float32)
    out *= session.gain
    if session.clip:
        out = np.clip(out, -1.0, 1.0)
    else:  # soft knee above 0.7, ceiling 0.97: only the clipped call reaches full scale
        knee, ceil = 0.7, 0.97
        mag = np.abs(out)
        soft = knee + (ceil - knee) * np.tanh((mag - knee) / (ceil - knee))
        out = np.where(mag > knee, np.sign(out) * soft, out)
    timeline = [(ch, start / SR, min(start + x.size, n) / SR, line)
                for ch, start, x, line in placed]
    return out.astype(np.float32), sorted(timeline, key=lambda e: (e[1], e[0]))


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


def encode(path: Path, x: np.ndarray, codec: str, rate: int, bit_rate: int | None) -> None:
    """Write (channels, n) float audio at SR with PyAV, resampled to `rate` for `codec`."""
    import av

    layout = "mono" if x.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        if bit_rate:
            stream.bit_rate = bit_rate
        stream.codec_context.options = {"flags": "+bitexact"}
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout,
                                      rate=rate, frame_size=stream.codec_context.frame_size
                                      or 1024)
        block = 4096
        for i in range(0, x.shape[1], block):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, i:i + block]),
                                               format="fltp", layout=layout)
            frame.sample_rate, frame.pts = SR, i
            for f in resampler.resample(frame):
                out.mux(stream.encode(f))
        for f in resampler.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


# ---------------------------------------------------------------------------------------------
# Manifest and README
# ---------------------------------------------------------------------------------------------

COLUMNS = ("file", "agent_id", "customer_id", "team", "recorded_at", "tags", "roles")

README_HEAD = """\
# Demo data

Synthetic sessions for trying Emoscope end to end (`make demo`): {n_calls} customer-service
calls and {n_diaries} wellbeing voice diaries, spread over two weeks of November 2026.
Every voice is synthetic: flite (slt, rms, awb) for English — speech pocketsphinx
recognises, so `emoscope demo` (`--asr pocketsphinx` by default) shows the words on the
Session page — and espeak-ng for Mandarin. Robotic, but each line has its own pitch, speed
and loudness following the mood of the words (an upset customer gets louder, higher and
faster, then settles), so the emotion timelines move.

* **Calls** are stereo, one speaker per channel: left = agent, right = customer, the telephony
  default. `call05` is the exception — its recorder put the customer on the left, so its
  manifest row says `roles=customer;agent`. Turns alternate with short gaps, and now and then
  a backchannel, an overlap or an interruption that cuts the other side off.
* **Diaries** are mono, one speaker: `p-001` on three days (tired → stressed → upbeat) and
  `p-002` once, in Mandarin.
* **Quality flags on purpose:** `call06` was recorded far too quietly (`too_quiet`), and the
  customer's shouting in `call02` is clipped (`clipped`).
* **Formats are mixed**, as real uploads are: 8 kHz μ-law WAV (telephone), MP3, Opus, AAC
  in M4A, Opus in Ogg.

`manifest.csv` gives agent, customer (the person's id for diaries), team, time, tags and, only
where they differ from the defaults, the speaker per channel. `lines.csv` is not read by
Emoscope: it is the script — every line with its channel, speaker, start and end (s), and
the mood it was voiced with — what a transcript is checked against (`bench/asr.py`).

| file | kind | language | duration | format | scenario |
|---|---|---|---|---|---|
"""

README_TAIL = """
Total size: {size}. Scripts, voices, moods and timing all live in `make_demo.py`.

## Regenerating

```
make demo-data            # or: .venv/bin/python data/demo/make_demo.py
```

Needs `flite` and `espeak-ng` on the PATH, numpy and PyAV. It takes under half a minute and
rewrites the audio, `manifest.csv`, `lines.csv` and this README. The seed is fixed and the
files are written bit-exact, so with the same flite, espeak-ng and FFmpeg versions a rerun
gives byte-identical files — and so the same session ids on re-ingest.
"""

FORMAT_NAMES = {"pcm_mulaw": "μ-law WAV", "libmp3lame": "MP3", "libopus": "Opus", "aac": "AAC"}


def write_manifest(out_dir: Path, done: list[Session]) -> None:
    rows = sorted(done, key=lambda s: s.manifest["recorded_at"])
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for s in rows:
            w.writerow({"file": s.file, **s.manifest})


def write_lines(out_dir: Path, lines: list[tuple]) -> None:
    """What was said when, and the mood it was voiced with: a transcript and rough ground truth."""
    with open(out_dir / "lines.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("file", "channel", "speaker", "start_s", "end_s", "mood", "text"))
        for file, ch, speaker, start, end, mood, text in lines:
            w.writerow((file, ch, speaker, f"{start:.2f}", f"{end:.2f}", mood, text))


def write_readme(out_dir: Path, done: list[Session]) -> None:
    calls = sum(s.kind == "call" for s in done)
    text = README_HEAD.format(n_calls=calls, n_diaries=len(done) - calls)
    for s in done:
        mins, secs = divmod(round(s.duration_s), 60)
        ch = "stereo" if len(s.channels) == 2 else "mono"
        rate = f"{s.rate // 1000} kHz"
        kbps = f" {s.bit_rate // 1000} kbps" if s.bit_rate else ""
        text += (f"| `{s.file}` | {s.kind} ({ch}) | {s.language} | {mins}:{secs:02d} | "
                 f"{FORMAT_NAMES[s.codec]} {rate}{kbps} | {s.scenario} |\n")
    total = sum((out_dir / s.file).stat().st_size for s in done)
    text += README_TAIL.format(size=f"{total / 1e6:.1f} MB of audio")
    (out_dir / "README.md").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder to write into")
    args = ap.parse_args(argv)
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on the PATH (apt-get install {tool})", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done, lines = [], []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i, session in enumerate(sessions()):
            rng = np.random.default_rng([SEED, i])  # each session independent of the others
            rendered = render_lines(session, rng, pool)
            x, timeline = compose(session, rendered, rng)
            session.duration_s = x.shape[1] / SR
            lines += [(session.file, ch, session.channels[ch], start, end, line.mood, line.text)
                      for ch, start, end, line in timeline]
            encode(args.out / session.file, x, session.codec, session.rate, session.bit_rate)
            size = (args.out / session.file).stat().st_size
            print(f"{session.file:36s} {session.duration_s:6.1f} s  {x.shape[0]} ch  "
                  f"{size / 1e3:7.0f} kB")
            done.append(session)
    write_manifest(args.out, done)
    write_lines(args.out, lines)
    write_readme(args.out, done)
    total = sum((args.out / s.file).stat().st_size for s in done)
    print(f"{len(done)} sessions, {total / 1e6:.2f} MB, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
