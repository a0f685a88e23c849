"""Fixed texts on which an int8 export is compared with the fp32 graph it was quantised from.

Written for this check (no data set is copied): the kinds of text the product embeds — short queries,
conversation turns, agent scratchpad notes, summaries and long technical paragraphs — so that both the
short and the long end of the quantised activation ranges are exercised.
"""

from __future__ import annotations

CALIBRATION_TEXTS: tuple[str, ...] = (
    "what did I tell you about my sister's wedding?",
    "When is the quarterly report due?",
    "restaurants near the office that serve vegan food",
    "How does the retry policy handle a timeout from the payment provider?",
    "symptoms of vitamin D deficiency",
    "Which tests failed in last night's build?",
    "my flight to Lisbon",
    "reset password email never arrives",
    "I finally finished the marathon on Sunday, four hours and twelve minutes!",
    "Sure, I can move the meeting to Thursday afternoon if that works better for the team.",
    "We adopted a rescue dog last week. Her name is Pepper and she is scared of the vacuum cleaner.",
    "Honestly I'm not sure the new design is better; the old navigation was easier to find things in.",
    "Can you remind me tomorrow morning to call the dentist about rescheduling?",
    "My daughter started violin lessons and practises every evening before dinner.",
    "The landlord says the heating will be fixed by Friday, but he said that last month too.",
    "Thanks! That recipe worked perfectly, although I used less sugar than it asked for.",
    "I've been reading about the history of the Silk Road and how trade shaped the cities along it.",
    "Lol no, the cat knocked the plant over again. Third time this week.",
    "TODO: migrate the billing cron job to the new scheduler; owner: infra; blocked on credentials.",
    "Observation: user prefers concise answers with code examples, dislikes long preambles.",
    "Plan: 1) fetch open tickets 2) group by component 3) draft weekly summary for the standup.",
    "Tool call search_flights(origin=OPO, destination=BER, date=2026-03-14) returned 7 results.",
    "Error: connection refused on 10.0.3.17:5432 after 3 retries; falling back to the read replica.",
    "Scratchpad — hypotheses: cache stampede at 09:00, or the batch import locking the orders table.",
    "Summary of the session: the user planned a two-week trip to Japan in April, comparing rail passes, "
    "booking a ryokan in Kyoto and asking about cherry blossom forecasts for Tokyo and Osaka.",
    "Summary: over three conversations the user described changing careers from accounting to nursing, "
    "the night classes it took, and the anxiety before the licensing exam, which she passed in June.",
    "Regular physical activity is associated with a lower risk of cardiovascular disease, type 2 diabetes "
    "and several cancers, and with better sleep and mood in adults of all ages.",
    "Mutations in the gene were found in a subset of patients with early-onset disease, suggesting that "
    "loss of function impairs the clearance of misfolded proteins in neurons.",
    "The randomised controlled trial enrolled 1,240 participants across twelve sites. After 24 weeks the "
    "intervention group showed a mean reduction in systolic blood pressure of 8.3 mmHg compared with "
    "3.1 mmHg in the control group, a difference that remained significant after adjusting for age, sex, "
    "baseline body-mass index and medication use. Adverse events were rare and similar in both arms.",
    "Transformer models compute contextual token representations with stacked self-attention layers. "
    "Sentence embeddings are commonly obtained by mean pooling the final hidden states over non-padding "
    "tokens and normalising the result, which allows cosine similarity to be computed as a dot product.",
    "Write-ahead logging guarantees durability: a transaction is acknowledged only after its log records "
    "reach stable storage, and after a crash the database replays the log from the last checkpoint to "
    "restore every committed change while discarding the effects of transactions that never committed.",
    "In the 18th century the city grew rapidly as a port, exporting wine and importing textiles and "
    "spices; its merchants financed the construction of the bridges, churches and warehouses that still "
    "define the waterfront, and several of the old trading houses survive today as museums and hotels.",
    "The committee reviewed the proposal in detail. Members raised concerns about the timeline, the "
    "staffing plan and the lack of an independent evaluation, and asked the authors to provide a revised "
    "budget, letters of support from partner institutions and a risk register before the next meeting. "
    "A final decision was postponed until the revised documents have been circulated to all members, "
    "who will have two weeks to submit written comments ahead of the vote.",
    "Photosynthesis converts light energy into chemical energy stored in glucose; in the light-dependent "
    "reactions water is split and oxygen released, while the Calvin cycle fixes carbon dioxide into "
    "three-carbon sugars using ATP and NADPH produced in the thylakoid membranes of the chloroplast.",
    "Les enfants jouent dans le parc pendant que leurs parents discutent sur un banc.",
    "Der Zug nach München hat heute wegen einer Signalstörung dreißig Minuten Verspätung.",
    "ok",
    "yes, exactly",
    "42",
    "2026-11-30 14:05 UTC",
    '#include <stdio.h> int main(void) { printf("hello\\n"); return 0; }',
    "SELECT id, created_at FROM episodes WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50;",
    "https://example.com/docs/api/v1/search?query=memory&k=10",
    "Reminder set: renew passport before 1 March; documents needed: old passport, two photos, form B12.",
    "The patient reported mild headaches in the morning, no nausea, no visual disturbance; blood pressure "
    "was 128/82 and the neurological examination was unremarkable.",
    "I think the main reason the project slipped is that nobody owned the integration work between the "
    "two teams, so every dependency turned into a week of waiting for answers in a shared channel.",
    "She said she would rather spend the bonus on a cooking course in Italy than on a new laptop.",
    "Customer asked whether the annual plan can be paused during parental leave; policy allows a pause "
    "of up to six months once per contract, with the renewal date moved by the same amount of time.",
)
