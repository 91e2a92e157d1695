"""Captions in each video's own language and script: topic words, generic words, a hook, a
greeting and hashtags, all from the words of that language.

Every language has the same number of generic words and hooks (the hooks in the same order, so
hook k means the same in each), so that the random draws of `captions` do not depend on the
language: the world's other draws (exposure, events) are the same whatever the captions say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# The world's topics and languages are the lexicon's (`world` reads them from here).
TOPICS = ("dance", "talking_head", "cooking", "pets", "gaming", "travel", "comedy", "sports")
LANGUAGES = ("en", "es", "pt", "id", "ja", "ko", "ar", "hi")
# Global hashtags, latin in every language; the topic's own hashtag is in the language.
GENERIC_TAGS = ("#fyp", "#foryou", "#viral", "#trending", "#explore", "#new")


@dataclass(frozen=True)
class Lexicon:
    """One language's caption words; `topics` and `tags` follow `TOPICS`' order, `hooks` the
    English ones' (wait for it, till the end, can't believe, part 2, must see, the ending)."""

    topics: tuple[str, ...]  # space-separated words per topic
    generic: str
    hooks: str  # separated by ' | '
    greeting: str
    tags: str  # the topics' own hashtags


LEXICONS: dict[str, Lexicon] = {
    "en": Lexicon(
        (
            "dance choreo moves groove beat routine challenge step trend spin rhythm remix",
            "story opinion thoughts advice storytime rant podcast explain life truth lesson talk",
            "recipe pasta dinner kitchen easy meal cook bake delicious homemade sauce chef",
            "dog cat puppy kitten cute pet fluffy paws zoomies doggo meow bark",
            "game gameplay level boss speedrun clutch win stream controller noob glitch ranked",
            "travel beach city trip sunset mountain explore hotel island roadtrip view hike",
            "funny prank joke laugh skit meme lol fail parody reaction comedy bit",
            "goal match football basketball training workout skills score team gym run sprint",
        ),
        "my today new best this the so very really first quick daily little big crazy perfect "
        "ultimate simple weekend morning night",
        "wait for it | watch till the end | you won't believe this | part 2 | must see | "
        "the ending",
        "hello",
        "#dance #talkinghead #cooking #pets #gaming #travel #comedy #sports",
    ),
    "es": Lexicon(
        (
            "baile coreografía pasos ritmo reto bailar tendencia giro música remix movimientos "
            "fiesta",
            "historia opinión consejos reflexión verdad vida lección charla pódcast explico "
            "pensamientos desahogo",
            "receta cena cocina fácil comida cocinar hornear delicioso casero salsa chef pasta",
            "perro gato cachorro gatito mascota tierno peludo patitas guau miau perrito michi",
            "juego partida nivel jefe victoria directo mando novato fallo clasificatoria gamer "
            "jugando",
            "viaje playa ciudad atardecer montaña explorar hotel isla ruta vistas senderismo "
            "aventura",
            "gracioso broma chiste risa sketch meme jaja ridículo parodia reacción comedia humor",
            "gol partido fútbol baloncesto entrenamiento ejercicio habilidades equipo gimnasio "
            "correr carrera deporte",
        ),
        "mi hoy nuevo mejor este el tan muy realmente primero rápido diario pequeño grande loco "
        "perfecto definitivo sencillo finde mañana noche",
        "espéralo | mira hasta el final | no vas a creer esto | parte 2 | imperdible | el final",
        "hola",
        "#baile #charla #receta #mascotas #videojuegos #viajes #humor #deportes",
    ),
    "pt": Lexicon(
        (
            "dança coreografia passos ritmo desafio dançar tendência giro música remix passinho "
            "batida",
            "história opinião conselho reflexão verdade vida lição conversa podcast explico "
            "desabafo pensamentos",
            "receita jantar cozinha fácil comida cozinhar assar delicioso caseiro molho chef massa",
            "cachorro gato filhote gatinho bichinho fofo peludo patinhas au miau cãozinho pet",
            "jogo jogatina nível chefão vitória live controle novato bug ranqueada gamer partida",
            "viagem praia cidade pôr-do-sol montanha explorar hotel ilha estrada vista trilha "
            "aventura",
            "engraçado pegadinha piada risada esquete meme kkkk mico paródia reação comédia humor",
            "gol partida futebol basquete treino academia habilidades time corrida placar esporte "
            "treinão",
        ),
        "meu hoje novo melhor este o tão muito realmente primeiro rápido diário pequeno grande "
        "louco perfeito definitivo simples fimdesemana manhã noite",
        "espera só | assista até o final | você não vai acreditar | parte 2 | imperdível | o final",
        "olá",
        "#dança #papo #receita #bichos #jogos #viagem #humor #esportes",
    ),
    "id": Lexicon(
        (
            "joget tari koreografi gerakan irama tantangan goyang tren putar musik remix dansa",
            "cerita opini pendapat saran curhat pelajaran hidup kebenaran ngobrol podcast jelasin "
            "renungan",
            "resep hidangan dapur mudah masak masakan enak rumahan sambal koki kue goreng",
            "anjing kucing anak-anjing anak-kucing peliharaan lucu berbulu kaki guguk meong "
            "kucingku gemoy",
            "game main level bos menang live stik pemula glitch rank mabar push",
            "liburan pantai kota senja gunung jelajah hotel pulau perjalanan pemandangan mendaki "
            "wisata",
            "kocak prank lelucon ketawa sketsa meme wkwk gagal parodi reaksi komedi receh",
            "gol pertandingan sepakbola basket latihan olahraga skill tim gym lari sprint skor",
        ),
        "aku hari-ini baru terbaik ini itu sangat banget beneran pertama cepat harian kecil besar "
        "gila sempurna pamungkas simpel akhir-pekan pagi malam",
        "tunggu dulu | tonton sampai akhir | kamu nggak bakal percaya | bagian 2 | "
        "wajib tonton | endingnya",
        "halo",
        "#tari #curhat #resep #hewan #mabar #liburan #kocak #olahraga",
    ),
    "ja": Lexicon(
        (
            "ダンス 振り付け 踊ってみた ステップ リズム チャレンジ 流行り ターン 曲 "
            "リミックス 練習 ビート",
            "話 意見 考え アドバイス 雑談 本音 人生 教訓 語り 解説 真実 トーク",
            "レシピ 料理 夕飯 キッチン 簡単 ごはん 手作り 美味しい お菓子 ソース 作り方 パスタ",
            "犬 猫 子犬 子猫 ペット かわいい もふもふ 肉球 わんこ にゃんこ 柴犬 猫のいる暮らし",
            "ゲーム 実況 レベル ボス 勝利 配信 コントローラー 初心者 バグ ランクマ ゲーマー 攻略",
            "旅行 海 街 夕日 山 散歩 ホテル 島 ドライブ 絶景 登山 旅",
            "面白い ドッキリ ネタ 爆笑 コント ミーム 草 失敗 パロディ リアクション お笑い ギャグ",
            "ゴール 試合 サッカー バスケ 部活 筋トレ スキル チーム ジム ランニング 全力 スポーツ",
        ),
        "私の 今日 新しい 最高 この その とても めっちゃ 本当に 初めて すぐ 毎日 小さい 大きい "
        "やばい 完璧 究極 シンプル 週末 朝 夜",
        "最後まで待って | 最後まで見て | 信じられない | パート2 | 必見 | 結末",
        "こんにちは",
        "#ダンス #雑談 #料理 #ペット #ゲーム #旅行 #お笑い #スポーツ",
    ),
    "ko": Lexicon(
        (
            "댄스 안무 춤 스텝 리듬 챌린지 유행 턴 음악 리믹스 연습 커버댄스",
            "이야기 의견 생각 조언 썰 솔직 인생 교훈 토크 설명 진실 수다",
            "레시피 요리 저녁 주방 간단 집밥 맛있는 베이킹 소스 셰프 파스타 먹방",
            "강아지 고양이 댕댕이 아기고양이 반려동물 귀여운 복슬복슬 발바닥 멍멍 야옹 냥이 집사",
            "게임 플레이 레벨 보스 승리 방송 컨트롤러 초보 버그 랭크 게이머 공략",
            "여행 바다 도시 노을 산 탐방 호텔 섬 드라이브 풍경 등산 여행스타그램",
            "웃긴 몰카 개그 웃음 콩트 밈 ㅋㅋㅋ 실패 패러디 리액션 코미디 꿀잼",
            "골 경기 축구 농구 훈련 운동 기술 팀 헬스 달리기 전력질주 스포츠",
        ),
        "나의 오늘 새로운 최고 이 그 너무 정말 진짜 처음 빠른 매일 작은 큰 미친 완벽한 궁극의 "
        "간단한 주말 아침 밤",
        "끝까지 기다려 | 끝까지 봐 | 믿을 수 없어 | 2편 | 꼭 봐야 할 | 결말",
        "안녕",
        "#댄스 #토크 #요리 #반려동물 #게임 #여행 #코미디 #스포츠",
    ),
    "ar": Lexicon(
        (
            "رقص كوريغرافيا خطوات إيقاع تحدي ترند دوران موسيقى ريمكس حركات دبكة رقصة",
            "قصة رأي أفكار نصيحة حكاية فضفضة بودكاست شرح حياة حقيقة درس كلام",
            "وصفة عشاء مطبخ سهل أكلة طبخ خبز لذيذ بيتي صلصة شيف معكرونة",
            "كلب قطة جرو قطيطة حيوان لطيف منفوش مخالب هاو مياو قطط أليف",
            "لعبة جيمنج مستوى زعيم فوز بث يد مبتدئ خلل رانكد قيمر تختيم",
            "سفر شاطئ مدينة غروب جبل استكشاف فندق جزيرة رحلة منظر تسلق سياحة",
            "مضحك مقلب نكتة ضحك سكتش ميم ههههه فشل تقليد ردة كوميديا فكاهة",
            "هدف مباراة كرة سلة تدريب تمرين مهارات فريق جيم جري سرعة رياضة",
        ),
        "لي اليوم جديد أفضل هذا هذه جدا كثير حقا أول سريع يومي صغير كبير مجنون مثالي نهائي بسيط "
        "ويكند صباح ليل",
        "انتظر | شاهد حتى النهاية | لن تصدق هذا | الجزء 2 | لازم تشوف | النهاية",
        "مرحبا",
        "#رقص #قصة #طبخ #حيوانات #ألعاب #سفر #كوميديا #رياضة",
    ),
    "hi": Lexicon(
        (
            "डांस नृत्य स्टेप्स ताल चैलेंज ट्रेंड ठुमके गाना रीमिक्स मूव्स कोरियोग्राफी नाच",
            "कहानी राय विचार सलाह किस्सा सच ज़िंदगी सबक बातें पॉडकास्ट समझाना मन",
            "रेसिपी खाना रसोई आसान व्यंजन पकाना स्वादिष्ट घर चटनी शेफ पराठा मसाला",
            "कुत्ता बिल्ली पिल्ला बिल्लू पालतू प्यारा रोएँदार पंजे भौं म्याऊँ डॉगी दोस्त",
            "गेम गेमप्ले लेवल बॉस जीत लाइव कंट्रोलर नौसिखिया गड़बड़ रैंक गेमर खिलाड़ी",
            "यात्रा समुद्र शहर सूर्यास्त पहाड़ घूमना होटल द्वीप सफ़र नज़ारा ट्रेक पर्यटन",
            "मज़ेदार प्रैंक चुटकुला हँसी स्किट मीम हाहा फेल पैरोडी रिएक्शन कॉमेडी मस्ती",
            "गोल मैच फुटबॉल बास्केटबॉल ट्रेनिंग कसरत स्किल्स टीम जिम दौड़ स्प्रिंट खेल",
        ),
        "मेरा आज नया सबसे यह वो बहुत काफ़ी सच्ची पहला जल्दी रोज़ छोटा बड़ा पागल परफेक्ट अल्टीमेट "
        "सिंपल वीकेंड सुबह रात",
        "रुको ज़रा | आख़िर तक देखो | यकीन नहीं होगा | भाग 2 | ज़रूर देखें | अंत",
        "नमस्ते",
        "#डांस #कहानी #रेसिपी #पालतू #गेमिंग #यात्रा #कॉमेडी #खेल",
    ),
}


@dataclass(frozen=True)
class _Words:
    topics: list[list[str]]
    generic: list[str]
    hooks: list[str]
    greeting: str
    tags: list[list[str]]  # per topic: its own hashtag, then the global ones


def _words(lexicon: Lexicon) -> _Words:
    own = lexicon.tags.split()
    return _Words(
        [t.split() for t in lexicon.topics],
        lexicon.generic.split(),
        lexicon.hooks.split(" | "),
        lexicon.greeting,
        [[tag, *GENERIC_TAGS] for tag in own],
    )


WORDS = [_words(LEXICONS[lang]) for lang in LANGUAGES]
# The draws' bounds, equal in every language (module docstring).
N_GENERIC, N_HOOKS = len(WORDS[0].generic), len(WORDS[0].hooks)


def captions(
    rng: np.random.Generator,
    topic: NDArray[np.int64],
    language: NDArray[np.int64],
    p_hook: NDArray[np.float64],
) -> list[str | None]:
    """Short captions in `language`'s words: topic words + generic words + hashtags, sometimes
    a hook (with probability `p_hook`) or a greeting; 5% are null.

    Topic words carry the topic, hooks carry part of the appeal, the words the language.
    """
    n = len(topic)
    n_topic = rng.integers(1, 4, n)
    n_generic = rng.integers(0, 3, n)
    n_tags = rng.integers(0, 4, n)
    topic_pick = rng.integers(0, 1 << 30, (n, 3))
    generic_pick = rng.integers(0, N_GENERIC, (n, 2))
    tag_pick = rng.integers(0, 1 << 30, (n, 3))
    hook_pick = rng.integers(0, N_HOOKS, n)
    has_hook = rng.random(n) < p_hook
    has_greeting = rng.random(n) < 0.3
    null = rng.random(n) < 0.05
    out: list[str | None] = []
    for i in range(n):
        if null[i]:
            out.append(None)
            continue
        w = WORDS[language[i]]
        words_t = w.topics[topic[i]]
        words = [w.generic[j] for j in generic_pick[i, : n_generic[i]]]
        words += [words_t[j % len(words_t)] for j in topic_pick[i, : n_topic[i]]]
        if has_greeting[i]:
            words.insert(0, w.greeting)
        if has_hook[i]:
            words.append(w.hooks[hook_pick[i]])
        tags = w.tags[topic[i]]
        words += dict.fromkeys(tags[j % len(tags)] for j in tag_pick[i, : n_tags[i]])
        out.append(" ".join(words))
    return out
