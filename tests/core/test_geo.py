"""Geofences in metres: circles at high latitude, polygons against brute-force references."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarmhub.core.geo import (
    Circle,
    Polygon,
    ZoneStatus,
    destination,
    distance_to_edge_m,
    fix_usable,
    haversine_m,
    point_in_polygon,
    zone_status,
)

OSLO = (59.9139, 10.7522)
BERGEN = (60.3913, 5.3221)
TROMSO = (69.6492, 18.9553)
TRONDHEIM = (63.4305, 10.3951)

SETTINGS = settings(max_examples=300, deadline=None)


# --- haversine -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected_km"),
    [
        (OSLO, BERGEN, 305.0),  # published great-circle distances, ±1 %
        (OSLO, TROMSO, 1148.0),
        (OSLO, TRONDHEIM, 391.0),
    ],
)
def test_haversine_between_norwegian_cities(a, b, expected_km):
    assert haversine_m(*a, *b) / 1000 == pytest.approx(expected_km, rel=0.01)


def test_haversine_one_degree_of_longitude_shrinks_with_latitude():
    at_equator = haversine_m(0, 0, 0, 1)
    at_60 = haversine_m(60, 10, 60, 11)
    assert at_60 == pytest.approx(at_equator / 2, rel=0.001)


@SETTINGS
@given(
    lat=st.floats(-80, 80),
    lon=st.floats(-170, 170),
    bearing=st.floats(0, 360),
    dist=st.floats(0, 50_000),
)
def test_destination_is_the_inverse_of_haversine(lat, lon, bearing, dist):
    lat2, lon2 = destination(lat, lon, bearing, dist)
    assert haversine_m(lat, lon, lat2, lon2) == pytest.approx(dist, abs=1e-3)


# --- circles -------------------------------------------------------------------


@pytest.mark.parametrize("bearing", [0, 45, 90, 135, 180, 225, 270, 315])
@pytest.mark.parametrize(("distance", "expected"), [(999.0, "inside"), (1001.0, "outside")])
def test_one_km_circle_at_60_north(bearing, distance, expected):
    """The bug shapely-in-degrees had: east/west the degree circle is half as wide."""
    fence = Circle(60.0, 10.0, 1000.0)
    lat, lon = destination(60.0, 10.0, bearing, distance)
    assert zone_status(fence, lat, lon, 0.0, 50.0) == ZoneStatus(expected)


def test_degrees_would_have_got_60_north_wrong():
    """Documents the trap: 900 m east is 0.016° of longitude, more than 1 km in 'degrees'."""
    lat, lon = destination(60.0, 10.0, 90, 900)
    naive_radius_deg = 1000 / 111_320
    assert math.hypot(lat - 60.0, lon - 10.0) > naive_radius_deg  # degrees say: outside
    assert zone_status(Circle(60.0, 10.0, 1000.0), lat, lon, 10, 50) is ZoneStatus.INSIDE


@pytest.mark.parametrize("centre", [OSLO, BERGEN, TROMSO])
@pytest.mark.parametrize(
    ("distance", "accuracy", "expected"),
    [
        (0, 10, ZoneStatus.INSIDE),
        (499, 10, ZoneStatus.INSIDE),
        (499.999, 10, ZoneStatus.INSIDE),  # on the edge counts as inside
        (505, 10, ZoneStatus.UNCERTAIN),  # disc straddles the edge
        (509, 10, ZoneStatus.UNCERTAIN),
        (511, 10, ZoneStatus.OUTSIDE),  # whole disc outside
        (600, 99, ZoneStatus.OUTSIDE),
        (600, 101, ZoneStatus.UNCERTAIN),
        # Issue 12 item 18: the accuracy limit guards INSIDE only. A poor fix whose
        # whole disc is outside is outside (it was UNCERTAIN: never alarmed).
        (2000, 150, ZoneStatus.OUTSIDE),
        (20_000, 200, ZoneStatus.OUTSIDE),  # 20 km away, 200 m accuracy
        (600, 150, ZoneStatus.UNCERTAIN),  # poor and straddling: still unknown
        (100, 150, ZoneStatus.UNCERTAIN),  # inside: a poor fix clears nothing
        (100, 100, ZoneStatus.INSIDE),  # at the limit: usable
    ],
)
def test_circle_decision_table(centre: tuple[float, float], distance, accuracy, expected):
    fence = Circle(*centre, 500.0)
    lat, lon = destination(*centre, 30, distance)
    assert zone_status(fence, lat, lon, accuracy, 100.0) is expected


@pytest.mark.parametrize(
    ("lat", "lon", "accuracy"),
    [(math.nan, 10.0, 5.0), (60.0, math.inf, 5.0), (60.5, 10.0, math.nan), (60.5, 10.0, -1.0)],
)
def test_unusable_fixes_are_uncertain(lat, lon, accuracy):
    assert zone_status(Circle(60.0, 10.0, 100), lat, lon, accuracy, 50) is ZoneStatus.UNCERTAIN
    assert not fix_usable(lat, lon, accuracy, 50)


@pytest.mark.parametrize(
    ("accuracy", "limit", "expected"),
    [(0.0, 150.0, True), (150.0, 150.0, True), (150.1, 150.0, False), (200.0, 150.0, False)],
)
def test_fix_usable_is_the_accuracy_limit(accuracy, limit, expected):
    assert fix_usable(60.0, 10.0, accuracy, limit) is expected


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"lat": 60.0, "lon": 10.0, "radius_m": 0.0},
        {"lat": 60.0, "lon": 10.0, "radius_m": -5.0},
        {"lat": 91.0, "lon": 10.0, "radius_m": 5.0},
        {"lat": 60.0, "lon": math.nan, "radius_m": 5.0},
    ],
)
def test_circle_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Circle(**kwargs)


# --- polygons ------------------------------------------------------------------


def _square_around(lat: float, lon: float, half_m: float) -> Polygon:
    north = destination(lat, lon, 0, half_m)[0]
    south = destination(lat, lon, 180, half_m)[0]
    east = destination(lat, lon, 90, half_m)[1]
    west = destination(lat, lon, 270, half_m)[1]
    return Polygon.of([(south, west), (south, east), (north, east), (north, west)])


def _l_shape(lat: float, lon: float) -> Polygon:
    """A concave L (a garden around a house), ~600 m across."""
    dlat = 600 / 111_195
    dlon = dlat / math.cos(math.radians(lat))
    pts = [(0, 0), (0, 1), (0.4, 1), (0.4, 0.4), (1, 0.4), (1, 0)]
    return Polygon.of([(lat + a * dlat, lon + b * dlon) for a, b in pts])


def _winding_number(poly: Polygon, lat: float, lon: float) -> int:
    """Brute-force reference: sum of the signed angles the ring subtends at the point."""
    total = 0.0
    pts = poly.points
    for (lat1, lon1), (lat2, lon2) in zip(pts, pts[1:] + pts[:1], strict=True):
        a1 = math.atan2(lat1 - lat, lon1 - lon)
        a2 = math.atan2(lat2 - lat, lon2 - lon)
        d = a2 - a1
        while d > math.pi:
            d -= 2 * math.pi
        while d < -math.pi:
            d += 2 * math.pi
        total += d
    return round(total / (2 * math.pi))


def _sampled_edge_distance(poly: Polygon, lat: float, lon: float, samples: int = 400) -> float:
    """Brute-force reference: haversine to many points along every edge."""
    best = math.inf
    pts = poly.points
    for (lat1, lon1), (lat2, lon2) in zip(pts, pts[1:] + pts[:1], strict=True):
        for i in range(samples + 1):
            f = i / samples
            best = min(
                best, haversine_m(lat, lon, lat1 + f * (lat2 - lat1), lon1 + f * (lon2 - lon1))
            )
    return best


def test_polygon_needs_three_points():
    with pytest.raises(ValueError):
        Polygon.of([(60.0, 10.0), (60.1, 10.0)])
    with pytest.raises(ValueError):
        Polygon(((60.0, 10.0), (60.1, 10.0)))
    # A closed GeoJSON-style ring of a triangle has 4 points; the closing one is dropped.
    tri = Polygon.of([(60.0, 10.0), (60.1, 10.0), (60.1, 10.1), (60.0, 10.0)])
    assert len(tri.points) == 3
    with pytest.raises(ValueError):
        Polygon.of([(60.0, 10.0), (60.1, 10.0), (60.0, 10.0)])  # only 2 distinct


@pytest.mark.parametrize("centre", [OSLO, BERGEN, TROMSO])
@pytest.mark.parametrize(
    ("bearing", "distance", "accuracy", "expected"),
    [
        (0, 0, 5, ZoneStatus.INSIDE),
        (0, 450, 5, ZoneStatus.INSIDE),
        (0, 520, 10, ZoneStatus.OUTSIDE),  # 20 m past the north edge
        (0, 520, 30, ZoneStatus.UNCERTAIN),
        (90, 520, 10, ZoneStatus.OUTSIDE),  # east: the edge in metres, not degrees
        (90, 520, 30, ZoneStatus.UNCERTAIN),
        (270, 700, 150, ZoneStatus.OUTSIDE),  # poor, but 200 m past the edge (item 18)
        (270, 600, 150, ZoneStatus.UNCERTAIN),  # poor and straddling
        (0, 0, 150, ZoneStatus.UNCERTAIN),  # poor and inside: clears nothing
    ],
)
def test_square_decision_table(centre: tuple[float, float], bearing, distance, accuracy, expected):
    fence = _square_around(*centre, 500)
    lat, lon = destination(*centre, bearing, distance)
    assert zone_status(fence, lat, lon, accuracy, 100) is expected


def test_l_shape_notch_is_outside():
    poly = _l_shape(*TROMSO)
    dlat = 600 / 111_195
    dlon = dlat / math.cos(math.radians(TROMSO[0]))
    notch = (TROMSO[0] + 0.8 * dlat, TROMSO[1] + 0.8 * dlon)  # the concave cut-out
    arm = (TROMSO[0] + 0.2 * dlat, TROMSO[1] + 0.8 * dlon)
    assert not point_in_polygon(poly, *notch)
    assert point_in_polygon(poly, *arm)
    # The notch point is 0.4 * 600 m = 240 m from both inner edges of the L.
    assert distance_to_edge_m(poly, *notch) == pytest.approx(240, rel=0.01)
    assert zone_status(poly, *notch, 230, 500) is ZoneStatus.OUTSIDE
    assert zone_status(poly, *notch, 250, 500) is ZoneStatus.UNCERTAIN


_FENCES = [_square_around(*OSLO, 400), _l_shape(*BERGEN), _l_shape(*TROMSO)]


@st.composite
def _near(draw: st.DrawFn, fence: Polygon) -> tuple[float, float]:
    lat0, lon0 = fence.points[0]
    return destination(lat0, lon0, draw(st.floats(0, 360)), draw(st.floats(0, 1500)))


@SETTINGS
@given(data=st.data(), which=st.integers(0, len(_FENCES) - 1))
def test_polygon_matches_brute_force_references(data, which):
    fence = _FENCES[which]
    lat, lon = data.draw(_near(fence))
    reference_edge = _sampled_edge_distance(fence, lat, lon)
    edge = distance_to_edge_m(fence, lat, lon)
    # Projection error (< 0.5 % at ~1.5 km) plus the sampling step (≤ 600 m / 400 / 2).
    assert edge == pytest.approx(reference_edge, rel=0.005, abs=1.0)
    if edge > 0.01:  # ray casting is only ambiguous on the edge itself
        assert point_in_polygon(fence, lat, lon) == (_winding_number(fence, lat, lon) != 0)


@SETTINGS
@given(
    data=st.data(),
    which=st.integers(0, len(_FENCES)),
    accuracies=st.lists(st.floats(0, 300), min_size=2, max_size=6),
)
def test_status_is_consistent_and_monotone_in_accuracy(data, which, accuracies):
    fence = _FENCES[which] if which < len(_FENCES) else Circle(*TROMSO, 700)
    origin = fence.points[0] if isinstance(fence, Polygon) else (fence.lat, fence.lon)
    lat, lon = destination(*origin, data.draw(st.floats(0, 360)), data.draw(st.floats(0, 1500)))
    inside = (
        point_in_polygon(fence, lat, lon)
        if isinstance(fence, Polygon)
        else haversine_m(fence.lat, fence.lon, lat, lon) <= fence.radius_m
    )
    rank = {ZoneStatus.OUTSIDE: 0, ZoneStatus.INSIDE: 0, ZoneStatus.UNCERTAIN: 1}
    previous = None
    for acc in sorted(accuracies):
        status = zone_status(fence, lat, lon, acc, 200.0)
        # Inside and outside are never both: OUTSIDE only for points not inside, and vice versa.
        if status is ZoneStatus.OUTSIDE:
            assert not inside
        if status is ZoneStatus.INSIDE:
            assert inside
        # A worse fix is never more certain, and never flips INSIDE <-> OUTSIDE.
        if previous is not None:
            assert rank[status] >= rank[previous]
            if status is not ZoneStatus.UNCERTAIN:
                assert status is previous
        previous = status
