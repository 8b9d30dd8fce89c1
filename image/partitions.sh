# GPT layout of out/airlock.img, as data (sourced by scripts/build-image).
# Sizes in MiB; every partition starts on a 1 MiB boundary. GUIDs, volume id,
# file-system UUID and hash seed are fixed so that two builds are identical.

DISK_SIZE_MIB=1024
DISK_GUID=86dbcd80-3bbc-4b0b-8b8e-fbfc2ab0b047

# 1: EFI system partition (FAT32): systemd-boot, loader/loader.conf and the
# UKIs of slot A and slot B (~20-40 MB each). 256 MiB leaves room for both
# slots plus a staged copy during an update.
ESP_NUM=1
ESP_NAME=airlock-esp
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B   # EFI System Partition
ESP_GUID=f6df8968-40d2-48cd-b61c-e838db0717f0
ESP_START_MIB=1
ESP_SIZE_MIB=256
ESP_FAT_VOLID=A1B10C4B                            # FAT volume serial (hex)
ESP_FAT_LABEL=AIRLOCK-ESP                         # at most 11 characters

# 2: state partition (ext4): model store, audit log, keys, config. Found by
# the supervisor through its PARTLABEL. Fills the rest of the image (minus
# 1 MiB for the backup GPT) and must stay the last partition: on a larger
# disk the supervisor grows it (and its ext4) to fill the disk on first boot
# (supervisor/src/grow.rs). Raise DISK_SIZE_MIB only for a larger image file.
STATE_NUM=2
STATE_NAME=airlock-state
STATE_TYPE=0FC63DAF-8483-4772-8E79-3D69D8477DE4   # Linux filesystem data
STATE_GUID=0e16a44c-724c-40b1-bffd-7e46645b4527
STATE_START_MIB=$((ESP_START_MIB + ESP_SIZE_MIB))
STATE_SIZE_MIB=$((DISK_SIZE_MIB - STATE_START_MIB - 1))
STATE_FS_UUID=9dbefce6-c157-480c-8321-061c147d1133
STATE_FS_HASH_SEED=1b272e7e-0d66-4489-8d46-b7af08373969
STATE_FS_LABEL=airlock-state
