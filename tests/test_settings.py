"""Settings come from the environment, with an embedded default for each."""


from tests.servers import settings_of_a_fresh_process

PROBE = ("import json, django; from django.conf import settings; django.setup(); "
         "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'], "
         "'db_name': str(settings.DATABASES['default']['NAME']), "
         "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], "
         "'worker': settings.ATTUNE_INPROCESS_WORKER, 'debug': settings.DEBUG, "
         "'home': str(settings.ATTUNE_HOME), 'key': settings.SECRET_KEY}))")


def probe(home, **env):
    return settings_of_a_fresh_process(PROBE, home, **env)


def test_the_embedded_defaults_need_nothing_but_a_data_folder(tmp_path):
    home = tmp_path / "fresh"
    first = probe(home)
    assert first["db"] == "django.db.backends.sqlite3" and first["db_name"] == str(home / "attune.sqlite3")
    assert first["layer"] == "channels.layers.InMemoryChannelLayer"
    assert first["worker"] is True and first["debug"] is False
    # The generated secret key is kept in the data folder and reused.
    assert (home / "secret_key").exists() and probe(home)["key"] == first["key"]


def test_database_url_and_redis_url_switch_to_the_scale_out_parts(tmp_path):
    got = probe(tmp_path, DATABASE_URL="postgres://attune:pw@127.0.0.1:5432/attune",
                REDIS_URL="redis://127.0.0.1:6379/0", DEBUG="1")
    assert got["db"] == "django.db.backends.postgresql"
    assert got["layer"] == "channels_redis.core.RedisChannelLayer"
    assert got["worker"] is False and got["debug"] is True
    assert probe(tmp_path, REDIS_URL="redis://127.0.0.1:6379/0", ATTUNE_INPROCESS_WORKER="1")["worker"] is True
