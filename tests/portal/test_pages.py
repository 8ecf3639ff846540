import pytest

pytestmark = pytest.mark.django_db


def test_home_page_has_a_search_box(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b'name="q"' in response.content
    assert b"Sign up" in response.content


def test_unknown_page_gets_the_friendly_404(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content


def test_navigation_shows_admin_only_to_staff(client, alice, admin_user):
    client.force_login(alice)
    assert b'href="/admin/"' not in client.get("/").content
    client.force_login(admin_user)
    assert b'href="/admin/"' in client.get("/").content


def test_admin_is_on(admin_client):
    response = admin_client.get("/admin/")
    assert response.status_code == 200
    assert b"Modelport administration" in response.content


def test_static_files_are_served_locally(live_server):
    import requests

    response = requests.get(f"{live_server.url}/static/css/modelport.css", timeout=10)
    assert response.status_code == 200
    assert "--accent" in response.text


def test_unknown_api_addresses_get_json_404s(client):
    response = client.get("/api/v1/predictions/not-a-uuid")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    response = client.post("/v2/models/demo/wine/versions/abc/infer", "{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}
