"""Render one seeded photoreal scene with Blender's Python module (bpy, Cycles on the CPU).

Run by the dataset builder in a Python that has `bpy` installed:

    echo '{"seed": 1, "kind": "room", "out": "x.png", ...}' | python blender_scene.py

(the arguments come on stdin: the furniture list is too long for a command line)

Three kinds of scene, to match the content of real-estate photographs:
- "room": a room with a window opening, walls/floor/ceiling with random colours
  and procedural textures, furniture and clutter from Sweet Home 3D's OBJ models,
  a ceiling light, sunlight and an HDRI sky seen through the window, and a camera
  at eye height;
- "product": one model on a seamless backdrop under studio lights, as in product
  photos of plain objects;
- "exterior": a street of procedural buildings (a house or an apartment block and
  its neighbours: window grids, balconies, roofs, a door) with lawn, pavement,
  trees, hedges and cars from the catalogs' exterior models, under a physical sky
  or an outdoor HDRI, seen from eye level or from above. ARGS["palette"] picks the
  skies and facade materials: "reserved" ones are never used for training.
Everything random comes from the seed, so a render is reproducible.
"""

import json
import math
import random
import sys

import bpy
from mathutils import Vector

ARGS = json.load(sys.stdin)
rng = random.Random(ARGS["seed"])


def reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = ARGS["samples"]
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 6
    scene.render.resolution_x, scene.render.resolution_y = ARGS["width"], ARGS["height"]
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.threads_mode = "FIXED"
    scene.render.threads = ARGS.get("threads", 2)
    scene.view_settings.view_transform = rng.choice(["AgX", "Filmic", "Standard"])
    return scene


def set_world(scene, strength):
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    nodes, links = world.node_tree.nodes, world.node_tree.links
    environment = nodes.new("ShaderNodeTexEnvironment")
    environment.image = bpy.data.images.load(rng.choice(ARGS["hdris"]))
    mapping = nodes.new("ShaderNodeMapping")
    mapping.inputs["Rotation"].default_value[2] = rng.uniform(0, 2 * math.pi)
    coordinates = nodes.new("ShaderNodeTexCoord")
    links.new(coordinates.outputs["Generated"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], environment.inputs["Vector"])
    background = nodes["Background"]
    background.inputs["Strength"].default_value = strength
    links.new(environment.outputs["Color"], background.inputs["Color"])


def random_colour(light=False, hsv=None):
    """A random colour, or one near `hsv` (hue, saturation, value)."""
    import colorsys

    if hsv:
        hue, saturation, value = hsv[0] + rng.uniform(-0.04, 0.04), hsv[1] * rng.uniform(0.7, 1.2), hsv[2] * rng.uniform(0.7, 1.2)
        return (*colorsys.hsv_to_rgb(hue % 1.0, min(saturation, 1.0), min(value, 1.0)), 1.0)
    hue, saturation = rng.random(), rng.uniform(0.0, 0.35)
    value = rng.uniform(0.6, 0.95) if light else rng.uniform(0.1, 0.8)
    return (*colorsys.hsv_to_rgb(hue, saturation, value), 1.0)


def material(name, light=False, pattern=None, hsv=None):
    """A principled material; `pattern` mixes two colours with a procedural texture and bumps it."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    shader = nodes["Principled BSDF"]
    shader.inputs["Roughness"].default_value = rng.uniform(0.15, 0.9)
    shader.inputs["Base Color"].default_value = random_colour(light, hsv)
    if pattern:
        texture = nodes.new(
            {
                "brick": "ShaderNodeTexBrick",
                "wave": "ShaderNodeTexWave",
                "noise": "ShaderNodeTexNoise",
                "checker": "ShaderNodeTexChecker",
                "voronoi": "ShaderNodeTexVoronoi",
            }[pattern]
        )
        texture.inputs["Scale"].default_value = rng.uniform(2, 12)
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = random_colour(light, hsv)
        ramp.color_ramp.elements[1].color = random_colour(light, hsv)
        links.new(
            texture.outputs[1]
            if pattern == "voronoi"
            else texture.outputs["Fac"]
            if "Fac" in texture.outputs
            else texture.outputs[0],
            ramp.inputs["Fac"],
        )
        links.new(ramp.outputs["Color"], shader.inputs["Base Color"])
        bump = nodes.new("ShaderNodeBump")
        bump.inputs["Strength"].default_value = rng.uniform(0.02, 0.3)
        links.new(ramp.outputs["Color"], bump.inputs["Height"])
        links.new(bump.outputs["Normal"], shader.inputs["Normal"])
    return mat


def box(name, centre, size, mat):
    bpy.ops.mesh.primitive_cube_add(location=centre)
    obj = bpy.context.active_object
    obj.name = name
    obj.scale = (size[0] / 2, size[1] / 2, size[2] / 2)
    obj.data.materials.append(mat)
    return obj


def import_model(spec):
    """Import a Sweet Home 3D OBJ, join its parts, scale it to the catalog size (cm) and sit it on z=0."""
    before = set(bpy.data.objects)
    bpy.ops.wm.obj_import(filepath=spec["obj"])
    parts = [obj for obj in bpy.data.objects if obj not in before and obj.type == "MESH"]
    if not parts:
        return None
    bpy.ops.object.select_all(action="DESELECT")
    for part in parts:
        part.select_set(True)
    bpy.context.view_layer.objects.active = parts[0]
    if len(parts) > 1:
        bpy.ops.object.join()
    obj = bpy.context.active_object
    bpy.ops.object.transform_apply(location=False, rotation=True, scale=True)
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    low = Vector([min(c[i] for c in corners) for i in range(3)])
    high = Vector([max(c[i] for c in corners) for i in range(3)])
    extent = high - low
    target = (spec["width"] / 100, spec["depth"] / 100, spec["height"] / 100)
    obj.scale = [t / e if e > 1e-6 else 1.0 for t, e in zip(target, extent, strict=True)]
    bpy.ops.object.transform_apply(location=False, rotation=False, scale=True)
    corners = [Vector(corner) for corner in obj.bound_box]
    centre = Vector([(min(c[i] for c in corners) + max(c[i] for c in corners)) / 2 for i in range(3)])
    bottom = min(c[2] for c in corners)
    obj.data.transform(__import__("mathutils").Matrix.Translation((-centre[0], -centre[1], -bottom)))
    return obj


def aim(camera, target):
    direction = Vector(target) - camera.location
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def add_camera(scene, location, target, lens):
    camera_data = bpy.data.cameras.new("camera")
    camera_data.lens = lens
    camera_data.clip_end = 1000.0
    camera = bpy.data.objects.new("camera", camera_data)
    scene.collection.objects.link(camera)
    camera.location = location
    aim(camera, target)
    scene.camera = camera


def area_light(location, size, energy, target=(0, 0, 0)):
    data = bpy.data.lights.new("area", "AREA")
    data.size, data.energy = size, energy
    data.color = (1.0, rng.uniform(0.85, 1.0), rng.uniform(0.7, 1.0))
    light = bpy.data.objects.new("area", data)
    bpy.context.scene.collection.objects.link(light)
    light.location = location
    aim(light, target)


def room(scene):
    width, depth, height = rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0), rng.uniform(2.4, 3.0)
    wall = material("wall", light=True, pattern=rng.choice([None, None, "noise"]))
    floor = material("floor", pattern=rng.choice(["wave", "brick", "noise", "checker", "voronoi"]))
    ceiling = material("ceiling", light=True)
    t = 0.1
    box("floor", (0, 0, -t / 2), (width + 2 * t, depth + 2 * t, t), floor)
    box("ceiling", (0, 0, height + t / 2), (width + 2 * t, depth + 2 * t, t), ceiling)
    box("wall_w", (-width / 2 - t / 2, 0, height / 2), (t, depth, height), wall)
    box("wall_e", (width / 2 + t / 2, 0, height / 2), (t, depth, height), wall)
    box("wall_s", (0, -depth / 2 - t / 2, height / 2), (width, t, height), wall)
    # the north wall has a window opening: four pieces around the hole
    win_w, win_h, sill = rng.uniform(0.8, min(2.5, width - 0.6)), rng.uniform(1.0, 1.6), rng.uniform(0.4, 0.9)
    win_x = rng.uniform(-width / 2 + win_w / 2 + 0.2, width / 2 - win_w / 2 - 0.2)
    y = depth / 2 + t / 2
    left, right = win_x - win_w / 2, win_x + win_w / 2
    box("wall_n_left", ((-width / 2 + left) / 2, y, height / 2), (left + width / 2, t, height), wall)
    box("wall_n_right", ((right + width / 2) / 2, y, height / 2), (width / 2 - right, t, height), wall)
    box("wall_n_low", (win_x, y, sill / 2), (win_w, t, sill), wall)
    box("wall_n_high", (win_x, y, (sill + win_h + height) / 2), (win_w, t, height - sill - win_h), wall)
    set_world(scene, rng.uniform(0.6, 2.5))
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = rng.uniform(1.0, 5.0)
    scene.collection.objects.link(sun)
    sun.rotation_euler = (math.radians(rng.uniform(30, 70)), 0, math.radians(rng.uniform(150, 210)))
    area_light(
        (rng.uniform(-1, 1), rng.uniform(-1, 1), height - 0.05), rng.uniform(0.5, 1.5), rng.uniform(50, 400), target=(0, 0, 0)
    )
    # furniture along the walls and in the room, clutter on top of nothing fancy: random spots on the floor
    placed = []
    for spec in rng.sample(ARGS["models"], k=min(len(ARGS["models"]), rng.randint(4, 9))):
        obj = import_model(spec)
        if obj is None:
            continue
        radius = max(spec["width"], spec["depth"]) / 200
        for _ in range(20):
            x = rng.uniform(-width / 2 + radius, width / 2 - radius)
            yy = rng.uniform(-depth / 2 + radius, depth / 2 - radius)
            if all((x - px) ** 2 + (yy - py) ** 2 > (radius + pr) ** 2 for px, py, pr in placed):
                break
        placed.append((x, yy, radius))
        obj.location = (x, yy, 0)
        obj.rotation_euler[2] = rng.choice([0, math.pi / 2, math.pi, 3 * math.pi / 2]) + rng.uniform(-0.2, 0.2)
    camera_at = (rng.uniform(-width / 2 + 0.4, width / 2 - 0.4), -depth / 2 + rng.uniform(0.3, 0.8), rng.uniform(1.1, 1.7))
    look_at = (rng.uniform(-width / 3, width / 3), rng.uniform(0, depth / 2), rng.uniform(0.6, 1.4))
    add_camera(scene, camera_at, look_at, rng.uniform(14, 28))


def product(scene):
    backdrop = material("backdrop", light=rng.random() < 0.8)
    box("floor", (0, 0, -0.05), (8, 8, 0.1), backdrop)
    box("back", (0, 2.0, 2.0), (8, 0.1, 4.0), backdrop)
    set_world(scene, rng.uniform(0.2, 1.0))
    spec = rng.choice(ARGS["models"])
    obj = import_model(spec)
    size = max(spec["width"], spec["depth"], spec["height"]) / 100
    if obj is not None:
        obj.rotation_euler[2] = rng.uniform(0, 2 * math.pi)
    distance = size * rng.uniform(2.2, 3.5)
    angle = rng.uniform(-0.8, 0.8)
    camera_at = (distance * math.sin(angle), -distance * math.cos(angle), spec["height"] / 100 * rng.uniform(0.6, 1.6))
    add_camera(scene, camera_at, (0, 0, spec["height"] / 200), rng.uniform(35, 70))
    area_light((-distance, -distance, 2 * size + 1), 2 * size + 0.5, rng.uniform(100, 600) * size, (0, 0, 0))
    area_light((distance, -distance / 2, size + 0.5), size + 0.5, rng.uniform(30, 200) * size, (0, 0, 0))


EXTERIOR_PALETTES = {  # skies and facade textures; "reserved" is for evaluation only (bench/independent.py)
    "train": {
        "skies": ["SINGLE_SCATTERING", "MULTIPLE_SCATTERING", "city.exr", "forest.exr", "courtyard.exr"],
        "facades": [None, "noise", "brick", "wave"],
    },
    "reserved": {"skies": ["PREETHAM", "HOSEK_WILKIE", "sunrise.exr", "sunset.exr"], "facades": ["voronoi", "checker"]},
}


class Boxes:
    """Axis-aligned boxes (and roofs) gathered into one mesh per material, so a facade's hundreds of windows are a
    few objects instead of hundreds; everything is moved by `offset`."""

    def __init__(self, offset=(0, 0, 0)):
        self.offset, self.parts = offset, {}

    def _add(self, mat, corners, faces):
        vertices, all_faces = self.parts.setdefault(mat, ([], []))
        first = len(vertices)
        vertices += [(x + self.offset[0], y + self.offset[1], z + self.offset[2]) for x, y, z in corners]
        all_faces += [[first + i for i in face] for face in faces]

    def add(self, centre, size, mat):
        corners = [
            (centre[0] + dx * size[0], centre[1] + dy * size[1], centre[2] + dz * size[2])
            for dx in (-0.5, 0.5)
            for dy in (-0.5, 0.5)
            for dz in (-0.5, 0.5)
        ]
        self._add(mat, corners, ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)))

    def roof(self, eaves, ridge, mat):
        """Four eave corners and a ridge line of two points: a gable roof, or a hip roof when the ridge is shorter."""
        self._add(mat, list(eaves) + list(ridge), ((0, 1, 5, 4), (2, 3, 4, 5), (1, 2, 5), (3, 0, 4), (0, 3, 2, 1)))

    def build(self, name):
        for mat, (vertices, faces) in self.parts.items():
            mesh = bpy.data.meshes.new(name)
            mesh.from_pydata(vertices, [], faces)
            mesh.materials.append(mat)
            obj = bpy.data.objects.new(name, mesh)
            bpy.context.scene.collection.objects.link(obj)


def glass():
    """Clear glass: the sky and the street reflect in it, and the room (or a curtain) behind it shows through."""
    mat = bpy.data.materials.new("glass")
    mat.use_nodes = True
    shader = mat.node_tree.nodes["Principled BSDF"]
    shader.inputs["Base Color"].default_value = (*[rng.uniform(0.6, 0.95)] * 3, 1.0)
    shader.inputs["Roughness"].default_value = rng.uniform(0.0, 0.05)
    shader.inputs["Transmission Weight"].default_value = 1.0
    return mat


def outdoor_sky(scene, sky):
    """A physical sky (its sun lights the scene) or an outdoor HDRI with a sun lamp."""
    elevation, rotation = math.radians(rng.uniform(12, 65)), rng.uniform(0, 2 * math.pi)
    physical = sky in ("SINGLE_SCATTERING", "MULTIPLE_SCATTERING")  # with a sun disc that lights the scene
    if sky.endswith(".exr"):
        ARGS["hdris"] = [path for path in ARGS["hdris"] if path.endswith(sky)]
        set_world(scene, rng.uniform(0.8, 2.0))
    else:
        world = bpy.data.worlds.new("world")
        scene.world = world
        world.use_nodes = True
        texture = world.node_tree.nodes.new("ShaderNodeTexSky")
        texture.sky_type = sky
        if physical:
            texture.sun_elevation, texture.sun_rotation = elevation, rotation
            texture.air_density, texture.aerosol_density = rng.uniform(0.5, 2.0), rng.uniform(0.3, 3.0)
            strength = rng.uniform(0.06, 0.2)
        else:
            texture.sun_direction = (
                math.cos(elevation) * math.sin(rotation),
                math.cos(elevation) * math.cos(rotation),
                math.sin(elevation),
            )
            texture.turbidity = rng.uniform(2.0, 6.0)
            strength = rng.uniform(0.3, 1.0)
        background = world.node_tree.nodes["Background"]
        background.inputs["Strength"].default_value = strength
        world.node_tree.links.new(texture.outputs["Color"], background.inputs["Color"])
    if physical:
        return
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = rng.uniform(2.0, 6.0)
    sun.data.angle = math.radians(rng.uniform(0.5, 3))
    scene.collection.objects.link(sun)
    sun.rotation_euler = (math.pi / 2 - elevation, 0, rotation)


def building(width, depth, floors, block, offset, facades):
    """A house (pitched roof, shutters) or an apartment block (flat roof, balconies), front facing -y."""
    parts = Boxes(offset=offset)
    storey = rng.uniform(2.7, 3.2)
    height = floors * storey + rng.uniform(0.3, 0.8)
    facade = material("facade", light=rng.random() < 0.7, pattern=rng.choice(facades))
    trim, frame, pane = material("trim", light=rng.random() < 0.6), material("frame", light=rng.random() < 0.7), glass()
    rooms = [material("room", hsv=(rng.random(), 0.2, rng.uniform(0.05, 0.5))) for _ in range(3)]
    parts.add((0, 0, height / 2), (width, depth, height), facade)
    parts.add((0, 0, 0.15), (width + 0.1, depth + 0.1, 0.3), trim)  # plinth
    window_w, window_h = rng.uniform(0.7, 1.6) * (1.3 if block else 1), rng.uniform(1.1, 1.7)
    columns = max(1, int(width / (window_w + rng.uniform(0.8, 2.2))))
    door_column = rng.randrange(columns)
    shutters = (not block) and rng.random() < 0.4
    balconies = block and rng.random() < 0.7
    railing = material("railing", light=rng.random() < 0.5) if rng.random() < 0.6 else glass()
    for side, (length, depth_here) in enumerate(((width, depth), (depth, width), (width, depth), (depth, width))):
        if side == 2 and rng.random() < 0.5:  # the back is rarely seen
            continue
        side_columns = max(1, int(length / width * columns)) if side % 2 else columns
        for floor in range(floors):
            z = floor * storey + rng.uniform(0.85, 1.0) + window_h / 2 if floor else 1.0 + window_h / 2
            for column in range(side_columns):
                u = (column + 0.5) * length / side_columns - length / 2
                door = side == 0 and floor == 0 and column == door_column
                w, h = (1.0, 2.1) if door else (window_w, window_h)
                zc = 0.3 + h / 2 if door else z
                local = [(u, -depth_here / 2), (depth_here / 2, u), (-u, depth_here / 2), (-depth_here / 2, -u)][side]
                normal = [(0, -1), (1, 0), (0, 1), (-1, 0)][side]
                along = (1, 0) if side % 2 == 0 else (0, 1)

                def at(out, across=0.0, local=local, normal=normal, along=along):
                    return (local[0] + normal[0] * out + along[0] * across, local[1] + normal[1] * out + along[1] * across)

                def size(a, thickness, b, along=along):
                    return (a, thickness, b) if along == (1, 0) else (thickness, a, b)

                parts.add((*at(0.03), zc), size(w + 0.16, 0.06, h + 0.16), frame)
                parts.add((*at(0.035), zc), size(w, 0.01, h), trim if door else rng.choice(rooms))  # behind the pane
                if not door:
                    parts.add((*at(0.06), zc), size(w, 0.02, h), pane)
                    parts.add((*at(0.08), zc - h / 2 - 0.05), size(w + 0.3, 0.16, 0.06), trim)  # sill
                if shutters and not door:
                    for sign in (-1, 1):
                        parts.add((*at(0.06, sign * (w / 2 + 0.3)), zc), size(0.5, 0.04, h + 0.1), trim)
                if balconies and floor and side == 0 and (column % 2 == 0 or rng.random() < 0.3):
                    slab_z = floor * storey + 0.05
                    parts.add((*at(0.7), slab_z), size(w + 1.0, 1.4, 0.15), trim)
                    parts.add((*at(1.38), slab_z + 0.55), size(w + 1.0, 0.04, 1.0), railing)
    if block or rng.random() < 0.25:  # flat roof with a parapet
        parts.add((0, 0, height + 0.3), (width + 0.2, depth + 0.2, 0.6), trim)
        parts.add((0, 0, height + 0.35), (width - 0.3, depth - 0.3, 0.6), material("roof"))
    else:
        roof = material("roof", pattern=rng.choice(["brick", "wave", None]))
        pitch, overhang = rng.uniform(0.3, 0.9), 0.4
        ridge = rng.choice([0.0, width * rng.uniform(0.2, 0.45)])  # gable or hip
        half_w, half_d = width / 2 + overhang, depth / 2 + overhang
        top = height + pitch * half_d
        parts.roof(
            [(-half_w, -half_d, height), (half_w, -half_d, height), (half_w, half_d, height), (-half_w, half_d, height)],
            [(-half_w + ridge, 0, top), (half_w - ridge, 0, top)],
            roof,
        )
    parts.build("building")
    return height


def place(spec_pool, count, spots, cache):
    """Import catalog models (each once, then copied) onto (x, y, turn) spots."""
    for _ in range(count):
        if not spots or not spec_pool:
            return
        spec = rng.choice(spec_pool)
        if spec["obj"] not in cache:
            cache[spec["obj"]] = import_model(spec)
        original = cache[spec["obj"]]
        if original is None:
            continue
        obj = original.copy()
        bpy.context.scene.collection.objects.link(obj)
        x, y, turn = spots.pop(rng.randrange(len(spots)))
        obj.location = (x, y, 0)
        obj.rotation_euler[2] = turn
    for original in cache.values():
        if original is not None and original.users_collection:
            original.location = (0, 0, -1000)  # the imported original stays out of sight


def exterior(scene):
    palette = EXTERIOR_PALETTES[ARGS.get("palette", "train")]
    sky = rng.choice(palette["skies"])
    outdoor_sky(scene, sky)
    # daylight is far brighter than a room: without this, Standard's clipping whites out most facades
    scene.view_settings.exposure = (
        rng.uniform(-2.2, -1.2) if scene.view_settings.view_transform == "Standard" else rng.uniform(-0.6, 0.4)
    )
    block = rng.random() < 0.45
    width = rng.uniform(14, 32) if block else rng.uniform(7, 14)
    depth = rng.uniform(10, 16) if block else rng.uniform(7, 12)
    floors = rng.randint(3, 8) if block else rng.randint(1, 3)
    setback = rng.uniform(1.0, 4.0) if block else rng.uniform(3.0, 9.0)
    front = 2.0 + setback  # street y < 0, pavement 0..2, then the plot
    height = building(width, depth, floors, block, (0, front + depth / 2, 0), palette["facades"])
    neighbours_x = [-1, 1] if rng.random() < 0.6 else [rng.choice([-1, 1])] if rng.random() < 0.5 else []
    for sign in neighbours_x:
        other_w = rng.uniform(7, 30)
        other_block = other_w > 14 and rng.random() < 0.7
        x = sign * (width / 2 + rng.uniform(1.0, 8.0) + other_w / 2)
        other_d = rng.uniform(8, 16)
        building(
            other_w,
            other_d,
            rng.randint(3, 8) if other_block else rng.randint(1, 3),
            other_block,
            (x, front + rng.uniform(-1, 3) + other_d / 2, 0),
            palette["facades"],
        )
    ground = Boxes()
    ground.add((0, 60, -0.05), (400, 120, 0.1), material("lawn", pattern="noise", hsv=(0.25, 0.45, 0.35)))
    ground.add((0, -50, -0.04), (400, 100, 0.1), material("asphalt", pattern="noise", hsv=(0.6, 0.05, 0.18)))
    ground.add(
        (0, 1.0, 0.0), (400, 2.0, 0.12), material("pavement", pattern=rng.choice(["brick", "checker", None]), hsv=(0.08, 0.1, 0.55))
    )
    if rng.random() < 0.5:
        ground.add((0, -2.5, -0.01), (400, 0.15, 0.1), material("marking", hsv=(0.15, 0.05, 0.9)))
    ground.add(
        (rng.uniform(-width / 4, width / 4), front / 2 + 1, 0.01),
        (rng.uniform(1.2, 4), front - 2, 0.06),
        material("path", pattern=rng.choice(["brick", None]), hsv=(0.07, 0.15, 0.6)),
    )
    ground.build("ground")
    models = ARGS["models"]
    plants = [m for m in models if m["category"] == "Exterior" and m["height"] > 90]
    garden = [m for m in models if m["category"] == "Exterior" and 5 < m["height"] <= 90]  # no flat road markings
    vehicles = [m for m in models if m["category"] == "Vehicles" and 100 < m["height"] < 300]
    span = width / 2 + 10
    cache = {}
    place(
        plants,
        rng.randint(1, 6),
        [
            (
                rng.uniform(-span, span),
                rng.choice([rng.uniform(2.5, front - 1), front + depth + rng.uniform(1, 10)]),
                rng.uniform(0, 2 * math.pi),
            )
            for _ in range(12)
        ],
        cache,
    )
    place(
        garden,
        rng.randint(0, 3),
        [(rng.uniform(-width / 2, width / 2), rng.uniform(2.5, front - 0.5), rng.uniform(0, 2 * math.pi)) for _ in range(8)],
        cache,
    )
    place(
        vehicles,
        rng.randint(0, 3),
        [(x, rng.uniform(-2.0, -1.2), rng.choice([0, math.pi]) + math.pi / 2) for x in (-12, -6, 0, 6, 12)],
        cache,
    )
    raised = rng.random() < 0.3  # a drone or an upper window across the street; else eye level
    distance = rng.uniform(15, 45) if raised else rng.uniform(6, 16) + (rng.uniform(4, 12) if block else 0)
    angle = rng.uniform(-0.7, 0.7)
    camera_z = rng.uniform(6, 30) if raised else rng.uniform(1.4, 1.8)
    camera_at = (rng.uniform(-width / 4, width / 4) + distance * math.sin(angle), front - distance * math.cos(angle), camera_z)
    look_z = rng.uniform(0.2, 0.5) * height if raised else camera_z + distance * math.tan(math.radians(rng.uniform(0, 15)))
    look_at = (rng.uniform(-width / 6, width / 6), front + depth / 4, look_z)
    half_width_seen = width / 2 / rng.uniform(0.45, 0.9)  # the building fills 45-90 % of the frame's width
    lens = min(60.0, max(14.0, 18 * (distance + depth / 4) / half_width_seen))
    add_camera(scene, camera_at, look_at, lens)


scene = reset_scene()
{"room": room, "product": product, "exterior": exterior}[ARGS["kind"]](scene)
scene.render.filepath = ARGS["out"]
bpy.ops.render.render(write_still=True)
