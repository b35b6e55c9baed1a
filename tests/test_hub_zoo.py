"""hub/zoo.json, the list of our published repos, agrees with the recipe registry."""
from __future__ import annotations

import json
from pathlib import Path

import ssl_zoo
from ssl_zoo.convert import FILTERS
from ssl_zoo.hub import parse_repo_spec

ZOO = json.loads((Path(__file__).parents[1] / "hub" / "zoo.json").read_text())


def test_entries_name_registered_recipes_and_unique_repos():
    recipes = set(ssl_zoo.list_models())
    names = [e["recipe"] for e in ZOO["entries"]]
    repos = [e["repo"] for e in ZOO["entries"]]
    assert len(set(names)) == len(names) and len(set(repos)) == len(repos)
    for entry in ZOO["entries"]:
        assert entry["recipe"] in recipes, entry["recipe"]
        repo_id, revision = parse_repo_spec(entry["repo"])
        assert revision is None and repo_id.split("/")[0] == ZOO["organization"]
        assert entry["produced_by"] in ("train", "convert")
        assert any(entry["recipe"] in c for c in entry["commands"])
        if entry["produced_by"] == "convert":
            up = entry["upstream"]
            assert up["source"] in FILTERS and up["url"].startswith("https://")


def test_registry_weights_match_the_zoo():
    """A recipe that points at a Hub repo names its zoo repo and the published commit and checksum."""
    by_recipe = {e["recipe"]: e for e in ZOO["entries"]}
    for name in ssl_zoo.list_models():
        w = ssl_zoo.get_recipe(name).weights
        if not w.hf_hub_id:
            continue
        entry = by_recipe[name]
        assert parse_repo_spec(w.hf_hub_id)[0] == entry["repo"]
        assert entry["published"], f"{name} points at {w.hf_hub_id} but zoo.json records no publication"
        assert w.revision == entry["published"]["revision"] and w.sha256 == entry["published"]["sha256"]


def test_converted_entries_match_the_recipes_official_release():
    """A converted entry publishes what the recipe downloads: same URL, converter and upstream md5;
    every recipe with an official release URL has such an entry."""
    by_recipe = {e["recipe"]: e for e in ZOO["entries"]}
    with_url = [n for n in ssl_zoo.list_models() if ssl_zoo.get_recipe(n).weights.url]
    assert with_url, "no recipe names an official release"
    for name in with_url:
        w = ssl_zoo.get_recipe(name).weights
        entry = by_recipe[name]
        assert entry["produced_by"] == "convert", name
        up = entry["upstream"]
        assert (up["url"], up["source"], up["md5"]) == (w.url, w.source, w.md5), name
        assert f"python hub/publish.py {name} --from-url --write" in entry["commands"]
    for entry in ZOO["entries"]:
        if entry["produced_by"] == "convert":
            assert entry["recipe"] in with_url, entry["recipe"]
