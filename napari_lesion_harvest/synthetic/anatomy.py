"""The phantom's normal anatomy: body wall, skeleton, chest and abdominal organs, vessels.

Every structure is an implicit shape in body millimetres (see :mod:`.canvas`)
painted in an order that lets later organs sit in the space left by earlier
ones (``into=`` restrictions). HU values follow the contrast phase of the
simulated scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_lesion_harvest.synthetic.canvas import Canvas, Tissue
from napari_lesion_harvest.synthetic.fields import smooth_fields
from napari_lesion_harvest.synthetic.shapes import capsule, ellipsoid, ellipsoid_radius

#: Body ``z`` (mm) of the anatomical landmarks used to place organs.
LUNG_APEX_Z = 0.0
PELVIS_END_Z = 660.0

#: HU of enhancing tissues per contrast phase.
PHASE_HU: dict[str, dict[str, float]] = {
    "non_contrast": dict(
        artery=42, vein=40, liver=58, spleen=48, cortex=35, medulla=32, pancreas=42,
        myocardium=45, bowel_wall=42,
    ),
    "arterial": dict(
        artery=290, vein=95, liver=70, spleen=105, cortex=185, medulla=85, pancreas=115,
        myocardium=110, bowel_wall=115,
    ),
    "portal_venous": dict(
        artery=175, vein=165, liver=105, spleen=112, cortex=165, medulla=150, pancreas=95,
        myocardium=100, bowel_wall=100,
    ),
}  # fmt: skip

#: Texture amplitude (HU per unit of the texture field) of each tissue.
TEXTURE_HU = {
    Tissue.LUNG: 18.0,
    Tissue.CAVITY_FAT: 10.0,
    Tissue.SUBCUTANEOUS_FAT: 8.0,
    Tissue.MUSCLE: 6.0,
    Tissue.LIVER: 5.0,
    Tissue.SPLEEN: 6.0,
    Tissue.KIDNEY: 6.0,
    Tissue.BOWEL: 12.0,
    Tissue.STOMACH: 8.0,
    Tissue.VERTEBRA: 45.0,
    Tissue.BONE: 60.0,
}


@dataclass(frozen=True)
class Patient:
    """Body habitus and scan phase of one phantom.

    Attributes
    ----------
    half_width, half_depth : float
        Semi-axes (mm) of the body outline (lateral, antero-posterior).
    fat_mm, muscle_mm : float
        Subcutaneous fat and body-wall muscle thickness (mm).
    phase : str
        Contrast phase, a key of :data:`PHASE_HU`.
    hu : dict
        HU of the enhancing tissues (phase values with per-patient variation).
    """

    half_width: float
    half_depth: float
    fat_mm: float
    muscle_mm: float
    phase: str
    hu: dict

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Patient:
        """A random patient."""
        phase = str(rng.choice(list(PHASE_HU), p=[0.15, 0.2, 0.65]))
        hu = {key: value * rng.uniform(0.9, 1.1) for key, value in PHASE_HU[phase].items()}
        return cls(
            half_width=float(rng.uniform(145, 180)),
            half_depth=float(rng.uniform(98, 125)),
            fat_mm=float(rng.uniform(6, 28)),
            muscle_mm=float(rng.uniform(7, 13)),
            phase=phase,
            hu=hu,
        )


@dataclass(frozen=True)
class BodyFrame:
    """Per-slice body outline and landmark positions (mm), shapes broadcast to ``(Z, 1, 1)``."""

    a: np.ndarray  # body half-width
    b: np.ndarray  # body half-depth
    fat_a: np.ndarray  # inner boundary of the subcutaneous fat
    fat_b: np.ndarray
    cavity_a: np.ndarray  # inner (thoracic / abdominal) cavity semi-axes
    cavity_b: np.ndarray
    vertebra_y: np.ndarray  # centre of the vertebral body
    vertebra_r: np.ndarray  # radius of the vertebral body

    def diaphragm_z(self, y, x) -> np.ndarray:
        """Body ``z`` of the diaphragm under point ``(y, x)``: the lungs lie above it."""
        ca, cb = float(self.cavity_a.mean()), float(self.cavity_b.mean())
        return (
            232.0
            + 12.0 * np.tanh(x / 40.0)
            + 50.0 * (x / ca) ** 2
            + 60.0 * np.clip(y / cb + 0.2, 0.0, 1.2) ** 2
        )


def body_frame(canvas: Canvas, patient: Patient) -> BodyFrame:
    """The body outline and spine position of every slice of ``canvas``."""
    z = canvas.z[:, None, None]
    a = patient.half_width * (1.0 + 0.05 * np.sin(np.pi * np.clip(z, 0, 650) / 650.0))
    b = np.full_like(a, patient.half_depth)
    fat = 2.0 + patient.fat_mm * (0.75 + 0.5 * np.clip((z - 250.0) / 200.0, 0, 1))
    vertebra_r = 14.0 + 9.0 * np.clip(z / 450.0, 0, 1)
    return BodyFrame(
        a=a,
        b=b,
        fat_a=a - fat,
        fat_b=b - fat,
        # body-wall muscles are thin on the flanks, thicker in front and behind
        cavity_a=a - fat - 0.5 * patient.muscle_mm,
        cavity_b=b - fat - 1.3 * patient.muscle_mm,
        vertebra_y=0.3 * b,
        vertebra_r=vertebra_r,
    )


def build_anatomy(canvas: Canvas, patient: Patient, rng: np.random.Generator) -> BodyFrame:
    """Paint the whole normal anatomy into ``canvas`` (HU and labels, in place).

    Returns
    -------
    BodyFrame
        The outline and landmarks used, for placing lesions and distractors.
    """
    frame = body_frame(canvas, patient)
    fields = smooth_fields(rng, (canvas.z, canvas.y, canvas.x), 3, correlation_mm=7.0)
    _body_wall(canvas, patient, frame)
    _spine_and_back(canvas, frame)
    _chest(canvas, patient, frame, rng)
    _abdomen(canvas, patient, frame, rng, fields)
    _pelvis(canvas, patient, frame)
    _ribs_and_girdle(canvas, frame)
    _vessel_networks(canvas, patient, frame, fields)
    texture = fields[2]
    amplitude = np.zeros(256, dtype=np.float32)
    for tissue, value in TEXTURE_HU.items():
        amplitude[tissue] = value
    canvas.hu += amplitude[canvas.labels] * texture
    return frame


# --------------------------------------------------------------------------- body wall


def _body_wall(canvas: Canvas, patient: Patient, frame: BodyFrame) -> None:
    """Table, skin, subcutaneous fat, muscle and the empty cavity (fat), on the whole canvas."""
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    # patient table: two carbon-fibre skins around a foam core, under the back
    # (a shallow cradle: its sides rise towards the patient's flanks)
    table_top = float(frame.b.max()) * 0.92 + 3.0
    curve = table_top - 0.0007 * canvas.x[None, :] ** 2
    yy = canvas.y[:, None]
    table = ((yy > curve) & (yy < curve + 2.0)) | ((yy > curve + 24) & (yy < curve + 26))
    table &= np.abs(canvas.x[None, :]) < 0.42 * len(canvas.x) * canvas.spacing[2]
    canvas.hu[:, table] = 120.0
    canvas.labels[:, table] = Tissue.TABLE

    def inside(a, b):
        return (x / a) ** 2 + (y / b) ** 2 <= 1.0

    back = y <= 0.92 * frame.b
    body = inside(frame.a, frame.b) & back
    fat = inside(frame.a - 2.0, frame.b - 2.0) & back
    muscle = inside(frame.fat_a, frame.fat_b)
    cavity = inside(frame.cavity_a, frame.cavity_b)
    layers = (
        (body, 40.0, Tissue.SKIN),
        (fat, -105.0, Tissue.SUBCUTANEOUS_FAT),
        (muscle & back, 55.0, Tissue.MUSCLE),
        (cavity & back, -95.0, Tissue.CAVITY_FAT),
    )
    for mask, value, tissue in layers:
        canvas.hu[mask] = value
        canvas.labels[mask] = tissue


# --------------------------------------------------------------------------- skeleton


def _spine_and_back(canvas: Canvas, frame: BodyFrame) -> None:
    """Vertebrae (body, discs, canal, posterior elements) and paraspinal/psoas muscles."""
    vy, vr = frame.vertebra_y, frame.vertebra_r
    top = float((vy - vr).min()) - 4.0
    window = canvas.window(
        (float(canvas.z[0]), top, -80.0), (float(canvas.z[-1]), float(frame.b.max()), 80.0)
    )
    if window is None:
        return
    z, y, x = canvas.grids(window)
    hu, labels = canvas.hu[window], canvas.labels[window]
    # sacrum: the vertebral body widens in the pelvis
    widen = 1.0 + 1.2 * np.clip((z - 520.0) / 80.0, 0, 1)
    canal_y = vy + 0.9 * vr + 8.0
    rn_body = np.sqrt((x / (1.1 * vr * widen)) ** 2 + ((y - vy) / (0.9 * vr)) ** 2)
    rn_canal = np.sqrt(x**2 + (y - canal_y) ** 2) / 8.0
    arch = (rn_canal <= 1.8) & (y > canal_y - 4.0)
    spinous = (np.abs(x) <= 4.0) & (y > canal_y) & (y < frame.cavity_b + 8.0)
    transverse = (np.abs(y - canal_y + 2.0) <= 3.0) & (np.abs(x) < 0.5 * vr + 14.0)
    period = 24.0 + 10.0 * np.clip(z / 450.0, 0, 1)
    disc_level = np.mod(z, period) < 6.0
    muscle_x = 0.8 * vr + 12.0
    paraspinal = ((np.abs(x) - muscle_x) / (0.8 * vr + 6.0)) ** 2 + (
        (y - canal_y - 10.0) / 15.0
    ) ** 2 <= 1.0
    paraspinal = paraspinal & ((labels == Tissue.CAVITY_FAT) | (labels == Tissue.MUSCLE))
    body = rn_body <= 1.0
    shell = rn_body > 1.0 - 2.0 / vr
    elements = (arch | spinous | transverse) & (rn_canal > 1.0)
    for mask, value, tissue in (
        (paraspinal, 55.0, Tissue.MUSCLE),
        (elements, 700.0, Tissue.BONE),
        (body & ~disc_level, np.where(shell, 950.0, 230.0), Tissue.VERTEBRA),
        (body & disc_level, 85.0, Tissue.DISC),
        (rn_canal <= 1.0, 15.0, Tissue.SPINAL_CANAL),
    ):
        mask = np.broadcast_to(mask, hu.shape)
        hu[mask] = np.broadcast_to(value, hu.shape)[mask]
        labels[mask] = tissue
    # psoas muscles beside the lumbar spine
    for side in (-1.0, 1.0):
        for (z0, y0, x0), (z1, y1, x1), radius in (
            ((330.0, 0.0, 8.0), (430.0, -6.0, 16.0), 12.0),
            ((430.0, -6.0, 16.0), (570.0, -18.0, 36.0), 20.0),
        ):
            vy0 = float(np.mean(vy))
            vr0 = float(np.mean(vr))
            p0 = (z0, vy0 + y0, side * (vr0 + x0))
            p1 = (z1, vy0 + y1, side * (vr0 + x1))
            canvas.paint(*capsule(p0, p1, radius), 55.0, Tissue.MUSCLE, into=(Tissue.CAVITY_FAT,))


def _ribs_and_girdle(canvas: Canvas, frame: BodyFrame) -> None:
    """Ribs and costal cartilage (a periodic band on the cavity wall), sternum, scapulae."""
    z = canvas.z[:, None, None]
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    ca, cb = frame.cavity_a, frame.cavity_b
    rn = np.sqrt((x / ca) ** 2 + (y / cb) ** 2)
    ring = (np.abs(rn - 1.0) * ca <= 3.5) & (z > 10.0) & (z < 460.0)
    idx = np.nonzero(ring)
    if idx[0].size:
        zr, yr, xr = canvas.z[idx[0]], canvas.y[idx[1]], canvas.x[idx[2]]
        g = np.abs(np.arctan2(xr, yr)) / np.pi  # 0 posterior (spine), 1 anterior (sternum)
        phase = (zr - 12.0 - 150.0 * g) / 24.0
        rib_number = np.floor(phase)
        in_rib = (phase - rib_number) < 8.0 / 24.0
        reach = np.where(rib_number >= 9, 0.55, np.where(rib_number >= 7, 0.8, 0.9))
        in_rib &= (rib_number >= 0) & (rib_number <= 11) & (g > 0.1) & (g < reach)
        depth = np.abs(rn[idx][in_rib] - 1.0) * np.broadcast_to(ca, rn.shape)[idx][in_rib]
        cartilage = g[in_rib] > 0.72
        values = np.where(cartilage, 130.0, np.where(depth > 1.8, 850.0, 300.0))
        sel = tuple(i[in_rib] for i in idx)
        canvas.hu[sel] = values
        canvas.labels[sel] = Tissue.BONE
    # sternum in front of the mediastinum
    sternum_y = -float(np.mean(cb)) + 4.0
    canvas.paint(
        *capsule((55.0, sternum_y, 0.0), (235.0, sternum_y, 0.0), 7.0), 450.0, Tissue.BONE
    )
    # scapulae: thin plates behind the upper ribs
    for side in (-1.0, 1.0):
        mean_a = float(np.mean(ca))
        mean_b = float(np.mean(cb))
        p0 = (10.0, 0.35 * mean_b, side * 0.55 * mean_a)
        p1 = (130.0, 0.55 * mean_b, side * 0.35 * mean_a)
        canvas.paint(
            *capsule(p0, p1, 3.0),
            650.0,
            Tissue.BONE,
            into=(Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT),
        )


# --------------------------------------------------------------------------- chest


def _chest(canvas: Canvas, patient: Patient, frame: BodyFrame, rng: np.random.Generator) -> None:
    """Lungs, mediastinum (heart, great vessels, trachea, bronchi, oesophagus)."""
    hu = patient.hu
    z = canvas.z[:, None, None]
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    ca, cb = frame.cavity_a, frame.cavity_b
    mediastinum_half = 10.0 + 26.0 * np.clip(1.0 - ((y + 0.05 * cb) / (0.75 * cb)) ** 2, 0, 1)
    apex = np.clip(z / 60.0, 0.05, 1.0)
    apex_shape = ((np.abs(x) - 0.45 * ca) / (0.55 * ca * apex)) ** 2 + (
        (y - 0.1 * cb) / (0.9 * cb * apex)
    ) ** 2 <= 1.0
    lung = (
        (canvas.labels == Tissue.CAVITY_FAT)
        & (z < frame.diaphragm_z(y, x))
        & (np.abs(x) > mediastinum_half)
        & apex_shape
    )
    dependent = 70.0 * np.clip(y / cb, -1, 1)
    canvas.hu[lung] = np.broadcast_to(-850.0 + dependent, lung.shape)[lung]
    canvas.labels[lung] = Tissue.LUNG

    mean_cb = float(np.mean(cb))
    mean_ca = float(np.mean(ca))
    vy = float(np.mean(frame.vertebra_y))
    vr = float(np.mean(frame.vertebra_r))
    chest = (Tissue.LUNG, Tissue.CAVITY_FAT)
    # heart: pericardial fat, myocardium, contrast-filled chambers with a septum
    heart_c = (192.0, -0.28 * mean_cb, 0.14 * mean_ca)
    heart_r = (52.0, 0.42 * mean_cb, 0.42 * mean_ca)
    below = frame.diaphragm_z
    canvas.paint(*ellipsoid(heart_c, heart_r, scale=1.08), -90.0, Tissue.CAVITY_FAT, into=chest)

    def heart_shape(scale):
        shape, lo, hi = ellipsoid(heart_c, heart_r, scale=scale)
        return (lambda zz, yy, xx: shape(zz, yy, xx) & (zz < below(yy, xx) + 8.0)), lo, hi

    canvas.paint(*heart_shape(1.0), hu["myocardium"], Tissue.HEART, into=chest)
    septum_angle = np.radians(rng.uniform(30, 50))

    def chambers(zz, yy, xx):
        inside = ellipsoid_radius(heart_c, np.asarray(heart_r) * 0.8, zz, yy, xx) <= 1.0
        across = (xx - heart_c[2]) * np.cos(septum_angle) + (yy - heart_c[1]) * np.sin(
            septum_angle
        )
        return inside & (np.abs(across) > 4.0)

    lo = np.subtract(heart_c, heart_r)
    hi = np.add(heart_c, heart_r)
    canvas.paint(chambers, lo, hi, hu["vein"] * 1.05, Tissue.HEART, into=(Tissue.HEART,))

    airway_y = vy - vr - 16.0
    vessels = (
        # (p0, p1, radius, hu key): ascending aorta, arch, descending aorta, pulmonary
        # trunk and arteries, superior vena cava
        ((200.0, -0.25 * mean_cb, 4.0), (95.0, -0.25 * mean_cb, 4.0), 15.0, "artery"),
        ((95.0, -0.25 * mean_cb, 4.0), (88.0, vy - 4.0, vr + 8.0), 13.0, "artery"),
        ((88.0, vy - 4.0, vr + 8.0), (250.0, vy - vr - 4.0, 14.0), 12.0, "artery"),
        ((175.0, -0.3 * mean_cb, 18.0), (125.0, -0.12 * mean_cb, 22.0), 13.0, "vein"),
        ((125.0, -0.12 * mean_cb, 22.0), (128.0, 0.02 * mean_cb, 0.33 * mean_ca), 9.0, "vein"),
        ((125.0, -0.12 * mean_cb, 16.0), (130.0, 0.0, -0.33 * mean_ca), 9.0, "vein"),
        ((30.0, -0.2 * mean_cb, -26.0), (165.0, -0.22 * mean_cb, -24.0), 10.0, "vein"),
    )
    # trachea and main bronchi: air with a soft-tissue wall
    airways = (
        ((-20.0, airway_y, 0.0), (105.0, airway_y, 0.0), 9.0),
        ((105.0, airway_y, 0.0), (135.0, airway_y + 6.0, 0.3 * mean_ca), 6.0),
        ((105.0, airway_y, 0.0), (128.0, airway_y + 6.0, -0.28 * mean_ca), 6.5),
    )
    for p0, p1, radius in airways:
        canvas.paint(*capsule(p0, p1, radius + 1.8), 45.0, Tissue.AIRWAY, into=chest)
    for p0, p1, radius in airways:
        canvas.paint(*capsule(p0, p1, radius), -980.0, Tissue.AIRWAY, into=(Tissue.AIRWAY,))
    for side in (-1.0, 1.0):  # lobar bronchi fanning out from the hilum
        start = (133.0, airway_y + 6.0, side * 0.3 * mean_ca)
        for _ in range(3):
            end = (
                start[0] + rng.uniform(-45, 60),
                start[1] + rng.uniform(-35, 30),
                start[2] + side * rng.uniform(10, 35),
            )
            canvas.paint(*capsule(start, end, 5.0), 45.0, Tissue.AIRWAY, into=(Tissue.LUNG,))
            canvas.paint(*capsule(start, end, 3.5), -980.0, Tissue.AIRWAY, into=(Tissue.AIRWAY,))
    for p0, p1, radius, key in vessels:
        canvas.paint(*capsule(p0, p1, radius), hu[key], Tissue.VESSEL, into=chest)
    # oesophagus behind the trachea
    esophagus = ((-20.0, vy - vr - 6.0, 6.0), (250.0, vy - vr - 6.0, 10.0))
    canvas.paint(*capsule(*esophagus, 7.0), 40.0, Tissue.ESOPHAGUS, into=chest)


# --------------------------------------------------------------------------- abdomen


def _abdomen(
    canvas: Canvas,
    patient: Patient,
    frame: BodyFrame,
    rng: np.random.Generator,
    fields: list[np.ndarray],
) -> None:
    """Kidneys, spleen, pancreas, liver, gallbladder, stomach, great vessels, bowel."""
    hu = patient.hu
    ca = float(np.mean(frame.cavity_a))
    cb = float(np.mean(frame.cavity_b))
    vy = float(np.mean(frame.vertebra_y))
    vr = float(np.mean(frame.vertebra_r))
    fat = (Tissue.CAVITY_FAT,)
    below = frame.diaphragm_z

    def under_diaphragm(shape_tuple, margin=2.0):
        shape, lo, hi = shape_tuple
        return (lambda z, y, x: shape(z, y, x) & (z > below(y, x) + margin)), lo, hi

    # descending aorta, iliac arteries, IVC and iliac veins
    aorta_y = vy - vr - 12.0
    for p0, p1, radius, key in (
        ((250.0, aorta_y + 8.0, 14.0), (480.0, aorta_y, 10.0), 11.0, "artery"),
        ((480.0, aorta_y, 10.0), (610.0, 0.1 * cb, 0.38 * ca), 6.5, "artery"),
        ((480.0, aorta_y, 10.0), (610.0, 0.1 * cb, -0.38 * ca), 6.5, "artery"),
        ((215.0, aorta_y - 4.0, -24.0), (490.0, aorta_y + 2.0, -18.0), 11.0, "vein"),
        ((490.0, aorta_y + 2.0, -18.0), (610.0, 0.16 * cb, -0.36 * ca), 7.0, "vein"),
        ((490.0, aorta_y + 2.0, -18.0), (610.0, 0.16 * cb, 0.36 * ca), 7.0, "vein"),
    ):
        canvas.paint(*capsule(p0, p1, radius), hu[key], Tissue.VESSEL, into=fat)

    # kidneys: cortex, medulla, sinus fat with a collecting system
    for side, kz in ((1.0, 355.0), (-1.0, 372.0)):
        center = (kz, 0.36 * cb, side * (vr + 42.0))
        radii = (52.0, 22.0, 26.0)
        cortex = canvas.paint(*ellipsoid(center, radii), hu["cortex"], Tissue.KIDNEY, into=fat)
        if cortex is None:
            continue
        canvas.paint(
            *ellipsoid(center, radii, scale=0.72),
            hu["medulla"],
            Tissue.KIDNEY,
            into=(Tissue.KIDNEY,),
        )
        sinus = (kz, center[1] - 4.0, center[2] - side * 14.0)
        canvas.paint(
            *ellipsoid(sinus, (30.0, 9.0, 10.0)), -60.0, Tissue.CAVITY_FAT, into=(Tissue.KIDNEY,)
        )
        canvas.paint(
            *ellipsoid(sinus, (18.0, 4.0, 5.0)), 8.0, Tissue.KIDNEY, into=(Tissue.CAVITY_FAT,)
        )

    spleen = ellipsoid((272.0, 0.34 * cb, 0.64 * ca), (55.0, 0.3 * cb, 0.2 * ca))
    canvas.paint(*under_diaphragm(spleen), hu["spleen"], Tissue.SPLEEN, into=fat)
    for p0, p1 in (
        ((292.0, 0.12 * cb, 0.45 * ca), (302.0, -0.05 * cb, 0.0)),
        ((302.0, -0.05 * cb, 0.0), (318.0, -0.05 * cb, -0.22 * ca)),
    ):
        canvas.paint(*capsule(p0, p1, 10.0), hu["pancreas"], Tissue.PANCREAS, into=fat)

    liver_lobes = (
        ellipsoid((292.0, -0.04 * cb, -0.36 * ca), (92.0, 0.8 * cb, 0.62 * ca)),
        ellipsoid((262.0, -0.45 * cb, 0.05 * ca), (45.0, 0.38 * cb, 0.45 * ca)),
    )
    for lobe in liver_lobes:
        canvas.paint(*under_diaphragm(lobe), hu["liver"], Tissue.LIVER, into=fat)
    portal = ((300.0, -0.02 * cb, -0.12 * ca), (284.0, 0.0, -0.38 * ca))
    canvas.paint(*capsule(*portal, 7.0), hu["vein"], Tissue.VESSEL, into=(Tissue.LIVER,) + fat)
    if rng.uniform() < 0.85:
        gallbladder = ellipsoid((335.0, -0.4 * cb, -0.28 * ca), (32.0, 14.0, 16.0))
        canvas.paint(*gallbladder, 12.0, Tissue.GALLBLADDER, into=(Tissue.LIVER,) + fat)

    # stomach: enhancing wall, gastric fluid with an air-fluid level (patient supine)
    center = (272.0, -0.22 * cb, 0.34 * ca)
    radii = (48.0, 0.28 * cb, 0.25 * ca)
    wall = canvas.paint(
        *under_diaphragm(ellipsoid(center, radii)), hu["bowel_wall"], Tissue.STOMACH, into=fat
    )
    if wall is not None:
        level = center[1] - rng.uniform(0.0, 0.6) * radii[1]
        inner = under_diaphragm(ellipsoid(center, radii, scale=0.86))
        canvas.paint(*inner, 15.0, Tissue.STOMACH, into=(Tissue.STOMACH,))
        shape, lo, hi = inner
        air = (lambda z, y, x: shape(z, y, x) & (y < level)), lo, hi
        canvas.paint(*air, -960.0, Tissue.STOMACH, into=(Tissue.STOMACH,))

    _bowel(canvas, patient, frame, rng, fields)


def _bowel(
    canvas: Canvas,
    patient: Patient,
    frame: BodyFrame,
    rng: np.random.Generator,
    fields: list[np.ndarray],
) -> None:
    """Colon (air and stool) and small-bowel loops (fluid, air, oral contrast, collapsed)."""
    ca = float(np.mean(frame.cavity_a))
    cb = float(np.mean(frame.cavity_b))
    fat = (Tissue.CAVITY_FAT,)
    wall_hu = patient.hu["bowel_wall"]
    colon = (
        ((560.0, 0.0, -0.62 * ca), (340.0, 0.05 * cb, -0.6 * ca)),
        ((340.0, 0.05 * cb, -0.6 * ca), (335.0, -0.55 * cb, 0.0)),
        ((335.0, -0.55 * cb, 0.0), (315.0, 0.05 * cb, 0.62 * ca)),
        ((315.0, 0.05 * cb, 0.62 * ca), (540.0, 0.1 * cb, 0.64 * ca)),
        ((540.0, 0.1 * cb, 0.64 * ca), (650.0, 0.55 * cb, 0.0)),
    )
    # stool: a mottled paste; gas collects anteriorly (patient supine)
    stool_hu = -70.0 + 45.0 * fields[2]
    for p0, p1 in colon:
        radius = rng.uniform(16, 23)
        mask = canvas.paint(*capsule(p0, p1, radius), wall_hu, Tissue.BOWEL, into=fat)
        if mask is None:
            continue
        lumen, lo, hi = capsule(p0, p1, radius - 2.5)
        canvas.paint(lumen, lo, hi, stool_hu, Tissue.BOWEL, into=(Tissue.BOWEL,))
        gas_level = (p0[1] + p1[1]) / 2.0 - rng.uniform(-0.2, 0.6) * radius

        def gas(z, y, x, lumen=lumen, level=gas_level):
            return lumen(z, y, x) & (y < level)

        canvas.paint(gas, lo, hi, -950.0, Tissue.BOWEL, into=(Tissue.BOWEL,))

    # small-bowel loops fill the remaining abdominal fat
    z_lo = max(float(canvas.z[0]), 300.0)
    z_hi = min(float(canvas.z[-1]), 600.0)
    if z_hi <= z_lo:
        return
    count = int((z_hi - z_lo + 40.0) / 40.0 * 16)
    for _ in range(count):
        center = (
            rng.uniform(z_lo - 20, z_hi + 20),
            rng.uniform(-0.8, 0.4) * cb,
            rng.uniform(-0.65, 0.65) * ca,
        )
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        half_length = rng.uniform(10, 35)
        radius = rng.uniform(8, 13)
        p0 = np.asarray(center) - half_length * direction
        p1 = np.asarray(center) + half_length * direction
        kind = rng.choice(4, p=[0.5, 0.12, 0.15, 0.23])
        inner = (15.0 + rng.uniform(-5, 10), -950.0, rng.uniform(180, 420), 60.0)[kind]
        mask = canvas.paint(*capsule(p0, p1, radius), wall_hu, Tissue.BOWEL, into=fat)
        if mask is not None and kind != 3:
            canvas.paint(*capsule(p0, p1, radius - 2.2), inner, Tissue.BOWEL, into=(Tissue.BOWEL,))


# --------------------------------------------------------------------------- pelvis


def _pelvis(canvas: Canvas, patient: Patient, frame: BodyFrame) -> None:
    """Bladder, iliac bones and femoral heads."""
    if canvas.z[-1] < 460.0:
        return
    ca = float(np.mean(frame.cavity_a))
    cb = float(np.mean(frame.cavity_b))
    bladder = ellipsoid((612.0, -0.3 * cb, 0.0), (42.0, 0.32 * cb, 0.38 * ca))
    canvas.paint(
        *bladder,
        patient.hu["bowel_wall"] - 40.0,
        Tissue.BLADDER,
        into=(Tissue.CAVITY_FAT, Tissue.BOWEL),
    )
    canvas.paint(
        *ellipsoid((612.0, -0.3 * cb, 0.0), (40.0, 0.3 * cb, 0.36 * ca)),
        8.0,
        Tissue.BLADDER,
        into=(Tissue.BLADDER,),
    )
    for side in (-1.0, 1.0):
        # iliac wing: a curved plate from the sacrum to the acetabulum
        for p0, p1 in (
            ((470.0, 0.45 * cb, side * 0.35 * ca), (520.0, 0.0, side * 0.82 * ca)),
            ((520.0, 0.0, side * 0.82 * ca), (610.0, 0.05 * cb, side * 0.6 * ca)),
            ((480.0, 0.5 * cb, side * 0.3 * ca), (600.0, 0.35 * cb, side * 0.45 * ca)),
        ):
            canvas.paint(*capsule(p0, p1, 6.0), 450.0, Tissue.BONE)
        head = (640.0, 0.05 * cb, side * 0.62 * ca)
        canvas.paint(*ellipsoid(head, (24.0, 24.0, 24.0)), 900.0, Tissue.BONE)
        canvas.paint(*ellipsoid(head, (21.0, 21.0, 21.0)), 280.0, Tissue.BONE)


# --------------------------------------------------------------------------- vessel trees


def _vessel_networks(
    canvas: Canvas, patient: Patient, frame: BodyFrame, fields: list[np.ndarray]
) -> None:
    """Branching small vessels: curves where two smooth random fields are both near zero.

    Pulmonary vessels thicken towards the hila; hepatic and mesenteric vessels
    enhance with the contrast phase.
    """
    n1, n2 = fields[0], fields[1]
    z = canvas.z[:, None, None]
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    ca = float(np.mean(frame.cavity_a))
    hilum_distance = np.sqrt(((np.abs(x) - 0.3 * ca) / 1.0) ** 2 + y**2 + ((z - 130.0) * 0.6) ** 2)
    width = np.clip(0.5 - hilum_distance / 260.0, 0.12, 0.5)
    tube = (np.abs(n1) < width) & (np.abs(n2) < width)
    lung = tube & (canvas.labels == Tissue.LUNG)
    canvas.hu[lung] = 30.0
    canvas.labels[lung] = Tissue.VESSEL
    liver_vessel = (np.abs(n1) < 0.22) & (np.abs(n2) < 0.22) & (canvas.labels == Tissue.LIVER)
    canvas.hu[liver_vessel] = patient.hu["vein"] + 5.0
    canvas.labels[liver_vessel] = Tissue.VESSEL
    mesenteric = (
        (np.abs(n1) < 0.12)
        & (np.abs(n2) < 0.12)
        & (canvas.labels == Tissue.CAVITY_FAT)
        & (z > 280)
    )
    canvas.hu[mesenteric] = patient.hu["vein"]
    canvas.labels[mesenteric] = Tissue.VESSEL
