"""Geofences in metres, and the pure decision whether a GPS fix left one.

Why not shapely: a circle buffered in degrees is an ellipse on the ground (one
degree of longitude at 60° N is half a degree of latitude), so a point 900 m
from the centre fell outside a "1 km" circle. Circles here use the haversine
distance in metres; polygons use ray casting in (lon, lat), which matched
shapely's own polygon test on 500 random points, plus an edge distance in
metres from a local equirectangular projection centred on the fix.

Scope: fences are municipal safe zones, a few hundred metres to a few
kilometres across, nowhere near a pole or the antimeridian. Polygon edges are
straight lines in (lon, lat); over a few kilometres that differs from the great
circle by centimetres, far below GPS accuracy.

A GPS fix is a disc, not a point: the tracker reports its accuracy radius. One
noisy fix must not send home care searching for a resident, so
:func:`zone_status` says OUTSIDE only when the whole disc lies outside the fence,
and UNCERTAIN whenever it cannot tell.

The accuracy limit (`max_accuracy_m`) guards only INSIDE (issue 12 item 18): a
poor fix must not clear a "left safe zone" alarm, but a fix whose whole disc is
outside is outside however wide the disc. Capping both ways meant a tracker 20
km away with 200 m accuracy (over the 150 m default) never alarmed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

# IUGG mean Earth radius. The spherical model errs by < 0.5 % against the
# ellipsoid, which is metres on a kilometre fence: far below GPS accuracy.
EARTH_RADIUS_M = 6_371_008.8

LatLon = tuple[float, float]


class ZoneStatus(StrEnum):
    """Where a fix is relative to a fence. Bounded: used on the timeline and as a label."""

    INSIDE = "inside"
    OUTSIDE = "outside"  # the whole accuracy disc is outside: raise "left safe zone"
    UNCERTAIN = "uncertain"  # straddles the edge, or the fix is too poor to judge


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    # min() guards asin against 1.0000000000000002 from rounding at antipodes.
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float) -> LatLon:
    """The point `distance_m` from (lat, lon) along `bearing_deg` (0 = north, 90 = east).

    The inverse of :func:`haversine_m` on the sphere; used to build fences and
    test points at exact ground distances.
    """
    phi1, lmb1 = math.radians(lat), math.radians(lon)
    theta = math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    sin_phi2 = math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    phi2 = math.asin(max(-1.0, min(1.0, sin_phi2)))
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * sin_phi2,
    )
    return math.degrees(phi2), (math.degrees(lmb2) + 540.0) % 360.0 - 180.0


def _check_lat_lon(lat: float, lon: float) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon)):
        raise ValueError(f"coordinates must be finite, got ({lat}, {lon})")
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"coordinates out of range: ({lat}, {lon})")


@dataclass(frozen=True, slots=True)
class Circle:
    """A safe zone of `radius_m` metres (on the ground) around a centre in degrees."""

    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        _check_lat_lon(self.lat, self.lon)
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"radius_m must be a positive number of metres, got {self.radius_m}")


@dataclass(frozen=True, slots=True)
class Polygon:
    """A safe zone bounded by a simple ring of (lat, lon) vertices in degrees.

    The ring is implicitly closed; build it with :meth:`of`, which also accepts
    the explicitly closed rings GeoJSON and most map tools write.
    """

    points: tuple[LatLon, ...]

    def __post_init__(self) -> None:
        if len(self.points) < 3:
            raise ValueError(f"a polygon needs at least 3 distinct points, got {len(self.points)}")
        for lat, lon in self.points:
            _check_lat_lon(lat, lon)

    @classmethod
    def of(cls, points: Iterable[tuple[float, float]]) -> Polygon:
        """Validate and normalise: floats, repeated consecutive and closing vertices dropped."""
        ring: list[LatLon] = []
        for lat, lon in points:
            point = (float(lat), float(lon))
            if not ring or ring[-1] != point:
                ring.append(point)
        if len(ring) > 1 and ring[0] == ring[-1]:
            ring.pop()
        return cls(tuple(ring))


Geofence = Circle | Polygon


def point_in_polygon(polygon: Polygon, lat: float, lon: float) -> bool:
    """Ray casting (even-odd rule) in (lon, lat). Points exactly on an edge may go either way.

    The edge case does not matter to :func:`zone_status`: a point on the edge is
    at distance 0 from it, so it can never be judged OUTSIDE.
    """
    inside = False
    pts = polygon.points
    lat_j, lon_j = pts[-1]
    for lat_i, lon_i in pts:
        # Does the edge (j -> i) straddle the horizontal line through the point?
        if (lat_i > lat) != (lat_j > lat):
            cross_lon = lon_i + (lat - lat_i) * (lon_j - lon_i) / (lat_j - lat_i)
            if lon < cross_lon:
                inside = not inside
        lat_j, lon_j = lat_i, lon_i
    return inside


def distance_to_edge_m(polygon: Polygon, lat: float, lon: float) -> float:
    """Metres from the point to the polygon's nearest edge.

    Projects the vertices onto a plane tangent at the point (x east, y north,
    metres), where the point is the origin, then takes the exact distance to each
    segment. Accurate to well under a percent within a few kilometres.
    """
    k = math.radians(1.0) * EARTH_RADIUS_M  # metres per degree of latitude
    kx = k * math.cos(math.radians(lat))  # metres per degree of longitude here
    xy = [((p_lon - lon) * kx, (p_lat - lat) * k) for p_lat, p_lon in polygon.points]
    best = math.inf
    x1, y1 = xy[-1]
    for x2, y2 in xy:
        best = min(best, _origin_to_segment(x1, y1, x2, y2))
        x1, y1 = x2, y2
    return best


def _origin_to_segment(x1: float, y1: float, x2: float, y2: float) -> float:
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(x1 * dx + y1 * dy) / length2))
    return math.hypot(x1 + t * dx, y1 + t * dy)


def zone_status(
    fence: Geofence, lat: float, lon: float, accuracy_m: float, max_accuracy_m: float
) -> ZoneStatus:
    """Judge one GPS fix against a fence, honouring its reported accuracy.

    - UNCERTAIN when the fix is invalid: accuracy negative or not a number, or
      coordinates not finite.
    - OUTSIDE when the whole accuracy disc is outside, whatever its size: for a
      circle, ``distance - accuracy > radius``; for a polygon, the point is
      outside and its nearest edge is more than `accuracy_m` away.
    - INSIDE when the reported point is inside the fence (edge included for
      circles) and the fix is usable (:func:`fix_usable`): a poor fix does not
      clear an alarm.
    - UNCERTAIN otherwise: the disc straddles the edge, or a poor fix is inside.

    The result only gets less certain as `accuracy_m` grows (OUTSIDE may become
    UNCERTAIN, never the reverse; INSIDE stays INSIDE until the fix is poor),
    so a worse fix can never turn an unknown into an alarm.
    """
    if not (math.isfinite(lat) and math.isfinite(lon) and math.isfinite(accuracy_m)) or not (
        accuracy_m >= 0.0
    ):
        return ZoneStatus.UNCERTAIN
    if isinstance(fence, Circle):
        distance = haversine_m(fence.lat, fence.lon, lat, lon)
        inside = distance <= fence.radius_m
        disc_clear = distance - accuracy_m > fence.radius_m
    else:
        inside = point_in_polygon(fence, lat, lon)
        disc_clear = not inside and distance_to_edge_m(fence, lat, lon) > accuracy_m
    if disc_clear:
        return ZoneStatus.OUTSIDE
    if inside and accuracy_m <= max_accuracy_m:
        return ZoneStatus.INSIDE
    return ZoneStatus.UNCERTAIN


def fix_usable(lat: float, lon: float, accuracy_m: float, max_accuracy_m: float) -> bool:
    """A fix good enough to say the tracker is inside: valid, accuracy within the limit.

    A tracker that sends none for `no_fix_alarm_after_s` raises `no_usable_fix`:
    its safe zone is not being watched (issue 12 item 18).
    """
    return (
        math.isfinite(lat)
        and math.isfinite(lon)
        and math.isfinite(accuracy_m)
        and 0.0 <= accuracy_m <= max_accuracy_m
    )
