"""CUB image-caption data from the two public archives, laid out as src/data/cub_layout.py reads it:
<data-dir>/cub/{train,test}/<class>/<image>.jpg and cub/text_{trainval,test}classes.txt.

The archives and what is read from them:
- CUB_200_2011.tgz, the Caltech-UCSD Birds-200-2011 images (Wah et al., 2011, CNS-TR-2011-001), from
  Caltech's data repository (data.caltech.edu/records/65de6-vp158; 1,150,585,339 bytes). Its md5 is the
  one dataset loaders have pinned since the file's first release (e.g. avalanche's CUB200 loader). Inside
  (the dataset's README): CUB_200_2011/images/<class>/<image>.jpg, 200 class folders named like
  001.Black_footed_Albatross, 11,788 images; CUB_200_2011/images.txt ("<id> <class>/<image>.jpg") and
  classes.txt ("<id> <class>"); annotations (parts, attributes, boxes) not used here.
- cvpr2016_cub.tar.gz, the data of Reed et al. (2016), "Learning Deep Representations of Fine-Grained
  Visual Descriptions" (CVPR), linked from the README of github.com/reedscot/cvpr2016 (a Google Drive
  file). Inside: cvpr2016_cub/text_c10/<class>/<image>.txt (10 captions per image, one per line),
  cvpr2016_cub/trainvalclasses.txt and testclasses.txt (150 and 50 class names, one per line: the
  split the MMVAE authors trained and tested on), and Torch files not used here. No checksum is
  published for it: its content is checked instead.

The split: the images of the 150 train+val classes -> train, of the 50 test classes -> test. Image order
is class folders sorted, files sorted (torchvision's ImageFolder, as the released code); caption line i
belongs to image i // 10. Everything is unpacked into <data-dir>/cub.partial, checked (every image has
its 10 captions, the class split covers the 200 classes once, the counts are the published ones), and
only then renamed to <data-dir>/cub, so a folder of that name is always complete.
"""
import os
import re
import shutil
import tarfile
import zlib

from tqdm import tqdm

from ...errors import UserError
from ...files import save_json
from ..cub_layout import CAPTIONS_PER_IMAGE, TEXT_FILES, image_files
from .download import check_file, download, no_network

IMAGES_URL = 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1'
IMAGES_FILE = 'CUB_200_2011.tgz'
IMAGES_MD5 = '97eceeb196236b17998738112f37df78'
CAPTIONS_DRIVE_ID = '0B0ywwgffWnLLZW9uVHNjb2JmNlE'  # the "birds" link of github.com/reedscot/cvpr2016
CAPTIONS_URL = f'https://drive.google.com/open?id={CAPTIONS_DRIVE_ID}'
CAPTIONS_FILE = 'cvpr2016_cub.tar.gz'
# Wah et al. (2011): 11,788 images of 200 species; Reed et al. (2016): 150 train+val and 50 test classes,
# 8,855 and 2,933 images (the released data/cub/text_testclasses.txt: 29,330 captions, 10 per test image)
PUBLISHED = {'images': 11788, 'classes': 200, 'train': 150, 'test': 50, 'train_images': 8855, 'test_images': 2933}
SPLIT_FILES = {'train': 'trainvalclasses.txt', 'test': 'testclasses.txt'}

IMAGE_MEMBER = re.compile(r'^(?:\./)?CUB_200_2011/images/([^/]+)/([^/]+\.jpg)$')
CAPTION_MEMBER = re.compile(r'^(?:\./)?cvpr2016_cub/text_c10/([^/]+)/([^/]+)\.txt$')
SPLIT_MEMBER = re.compile(r'^(?:\./)?cvpr2016_cub/(trainvalclasses|testclasses)\.txt$')
META_MEMBER = re.compile(r'^(?:\./)?CUB_200_2011/(images|classes)\.txt$')


def downloads_dir(data_dir):
    return os.path.join(data_dir, 'downloads')


def images_archive(data_dir, local=None):
    """The images archive: a local copy (md5 checked) or the download (resumable, md5 checked)."""
    manual = (f"download {IMAGES_URL} on a machine with network access and give it with --cub-images FILE; "
              f"then run this command again")
    if local:
        check_file(local, 'md5', IMAGES_MD5, 'the CUB-200-2011 archive', f'give the published {IMAGES_FILE}')
        return local
    path = download(IMAGES_URL, os.path.join(downloads_dir(data_dir), IMAGES_FILE), f'CUB {IMAGES_FILE}', manual,
                    md5=IMAGES_MD5)
    return path


def captions_archive(data_dir, local=None):
    """The captions archive: a local copy or the Google Drive download (gdown, resumable)."""
    if local:
        return local
    path = os.path.join(downloads_dir(data_dir), CAPTIONS_FILE)
    if os.path.isfile(path):
        return path
    manual = (f"open {CAPTIONS_URL} in a browser (Google Drive), download {CAPTIONS_FILE} and give it with "
              f"--cub-captions FILE; then run this command again")
    try:
        import gdown
    except ImportError:
        raise UserError(f"downloading {CAPTIONS_FILE} from Google Drive needs gdown (pip install gdown, or "
                        f"pip install -e '.[cub]').\n  fix: install it, or {manual}") from None
    os.makedirs(downloads_dir(data_dir), exist_ok=True)
    try:  # gdown writes to a temporary file, resumed on a rerun, and moves it to `path` when whole
        done = gdown.download(id=CAPTIONS_DRIVE_ID, output=path, quiet=False, resume=True)
    except Exception as e:  # gdown raises its own errors for quotas, permissions and the network
        raise no_network(f'the CUB captions ({CAPTIONS_FILE})', CAPTIONS_URL, e, manual) from None
    if not done or not os.path.isfile(path):
        raise no_network(f'the CUB captions ({CAPTIONS_FILE})', CAPTIONS_URL, RuntimeError('no file'), manual)
    return path


def _open_tar(path, what):
    try:
        return tarfile.open(path, 'r:*')
    except (tarfile.TarError, OSError) as e:
        raise UserError(f"{path} is not a readable tar archive ({e}): not {what}, or a download cut short.\n"
                        f"  fix: delete it and run this command again, or give the right file") from None


def _members(tar, path, desc):
    """The archive's regular files, with a progress bar over its compressed bytes; an archive cut short or
    damaged part way is an error, not a traceback."""
    raw = tar.fileobj.fileobj if hasattr(tar.fileobj, 'fileobj') else tar.fileobj
    with tqdm(total=os.path.getsize(path), unit='B', unit_scale=True, desc=desc, disable=None) as bar:
        members = iter(tar)
        while True:
            try:
                m = next(members)
            except StopIteration:
                return
            except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                raise _damaged(path, e) from None
            bar.update(raw.tell() - bar.n)
            if m.isfile():
                yield m


def _damaged(path, e):
    return UserError(f"{path} is damaged or cut short ({type(e).__name__}: {e}).\n"
                     f"  fix: delete it and run this command again, or give a whole copy")


def _bytes(tar, m, path):
    """A member's content; a member cut short is an error naming the archive."""
    try:
        return tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _damaged(path, e) from None


def _text(tar, m, path):
    try:
        return _bytes(tar, m, path).decode('utf-8')
    except UnicodeDecodeError:
        raise UserError(f"{m.name} in {path} is not UTF-8 text: not the {CAPTIONS_FILE} of Reed et al.") from None


def read_captions(path):
    """({'train': [classes], 'test': [classes]}, {(class, image stem): [captions]}) from cvpr2016_cub."""
    splits, captions = {}, {}
    with _open_tar(path, f'the captions archive {CAPTIONS_FILE}') as tar:
        for m in _members(tar, path, f'reading {os.path.basename(path)}'):
            if match := CAPTION_MEMBER.match(m.name):
                lines = [s.strip() for s in _text(tar, m, path).splitlines()]
                captions[match.groups()] = [s for s in lines if s]
            elif match := SPLIT_MEMBER.match(m.name):
                split = 'train' if match.group(1) == 'trainvalclasses' else 'test'
                splits[split] = sorted(set(_text(tar, m, path).split()))
    for split, name in SPLIT_FILES.items():
        if split not in splits:
            raise UserError(f"{path} has no cvpr2016_cub/{name}: not the {CAPTIONS_FILE} of Reed et al. (2016).\n"
                            f"  fix: give that archive with --cub-captions FILE")
    return splits, captions


def unpack_images(path, dst, split_of):
    """Each CUB_200_2011/images/<class>/<image>.jpg into dst/<split>/<class>/<image>.jpg.
    Returns ({split: n images}, {'images': n listed in images.txt, 'classes': n in classes.txt})."""
    counts, listed, unknown = {'train': 0, 'test': 0}, {}, set()
    with _open_tar(path, f'the images archive {IMAGES_FILE}') as tar:
        for m in _members(tar, path, f'unpacking {os.path.basename(path)}'):
            if match := META_MEMBER.match(m.name):
                listed[match.group(1)] = sum(1 for line in _text(tar, m, path).splitlines() if line.strip())
                continue
            match = IMAGE_MEMBER.match(m.name)
            if not match:
                continue
            cls, name = match.groups()
            if cls not in split_of:
                unknown.add(cls)
                continue
            folder = os.path.join(dst, split_of[cls], cls)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, name), 'wb') as f:
                f.write(_bytes(tar, m, path))  # a JPEG of CUB: tens of kB
            counts[split_of[cls]] += 1
    if unknown:
        raise UserError(f"{len(unknown)} image classes of {path} are in neither class list of the captions "
                        f"archive (e.g. {sorted(unknown)[0]}): the two archives do not belong together.\n"
                        f"  fix: give the published {IMAGES_FILE} and {CAPTIONS_FILE}")
    return counts, listed


def write_captions(dst, split, captions):
    """text_<split>classes.txt: 10 captions per image, one per line, in the loaders' image order.
    Returns how many images had more than 10 captions (the first 10 are kept)."""
    lines, longer = [], 0
    for _, p in image_files(dst, split):
        key = (os.path.basename(os.path.dirname(p)), os.path.splitext(os.path.basename(p))[0])
        caps = captions.get(key)
        if caps is None or len(caps) < CAPTIONS_PER_IMAGE:
            found = 'no caption file' if caps is None else f'{len(caps)} captions'
            raise UserError(f"the image {key[0]}/{key[1]}.jpg has {found} in cvpr2016_cub/text_c10 (10 needed).\n"
                            f"  fix: give the published {CAPTIONS_FILE} of Reed et al. (2016)")
        longer += len(caps) > CAPTIONS_PER_IMAGE
        lines += caps[:CAPTIONS_PER_IMAGE]
    with open(os.path.join(dst, TEXT_FILES[split]), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    return longer


def check_counts(counts, listed, splits):
    """The published counts (PUBLISHED), and the images archive's own lists."""
    found = {'images': counts['train'] + counts['test'], 'classes': len(splits['train']) + len(splits['test']),
             'train': len(splits['train']), 'test': len(splits['test']), 'train_images': counts['train'],
             'test_images': counts['test']}
    words = {'images': 'images', 'classes': 'classes', 'train': 'train+val classes', 'test': 'test classes',
             'train_images': 'images of the train+val classes', 'test_images': 'images of the test classes'}
    for key, n in PUBLISHED.items():
        if found[key] != n:
            raise UserError(f"the CUB archives give {found[key]:,} {words[key]}, not the published {n:,}.\n"
                            f"  fix: give the published {IMAGES_FILE} and {CAPTIONS_FILE}")
    for key in ('images', 'classes'):
        if listed.get(key) not in (None, found[key]):
            raise UserError(f"{IMAGES_FILE} lists {listed[key]:,} {key} in CUB_200_2011/{key}.txt but holds "
                            f"{found[key]:,}: a damaged archive.\n  fix: delete it and run this command again")
    return found


def split_of_class(splits):
    """{class: 'train' or 'test'}; a class in both lists is an error."""
    both = set(splits['train']) & set(splits['test'])
    if both:
        raise UserError(f"{len(both)} classes are in both {SPLIT_FILES['train']} and {SPLIT_FILES['test']} "
                        f"(e.g. {sorted(both)[0]}): not the class split of Reed et al. (2016).\n"
                        f"  fix: give the published {CAPTIONS_FILE}")
    return {c: split for split in ('train', 'test') for c in splits[split]}


def check_prepared(dst):
    """A line for a <data-dir>/cub that is already there, if it is complete; else an error."""
    from ..cub_layout import check_layout
    files = check_layout(dst)  # both image folders and caption files, 10 captions per image
    n = {split: len(files[split]) for split in files}
    classes = {split: len({k for k, _ in files[split]}) for split in files}
    want = {split: (PUBLISHED[f'{split}_images'], PUBLISHED[split]) for split in files}
    if any((n[split], classes[split]) != want[split] for split in files):
        raise UserError(f"{dst} exists but holds {n['train']:,} + {n['test']:,} images of {classes['train']} + "
                        f"{classes['test']} classes, not the published {want['train'][0]:,} + {want['test'][0]:,} of "
                        f"{want['train'][1]} + {want['test'][1]}.\n"
                        f"  fix: move it away, and run this command again to build it from the archives")
    return f"cub: already in place in {dst} ({n['train']:,} train / {n['test']:,} test images)"


def prepare_cub(data_dir, images=None, captions=None):
    """<data-dir>/cub from the two archives (local files, or downloaded); returns a line to print."""
    dst = os.path.join(data_dir, 'cub')
    if os.path.exists(dst):
        return check_prepared(dst)
    images = images_archive(data_dir, images)
    captions = captions_archive(data_dir, captions)
    splits, text = read_captions(captions)
    staging = dst + '.partial'
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left: never taken for complete
    try:
        counts, listed = unpack_images(images, staging, split_of_class(splits))
        found = check_counts(counts, listed, splits)
        longer = {split: write_captions(staging, split, text) for split in ('train', 'test')}
        save_json({'images_archive': os.path.abspath(images), 'images_md5': IMAGES_MD5,
                   'captions_archive': os.path.abspath(captions), 'counts': found,
                   'images_per_split': counts, 'images_with_more_than_10_captions': longer,
                   'class_split': splits}, os.path.join(staging, 'prepared.json'))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.rename(staging, dst)
    return (f"cub: {counts['train']:,} train ({found['train']} classes) / {counts['test']:,} test "
            f"({found['test']} classes) images with 10 captions each in {dst}")
