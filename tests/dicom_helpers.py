"""Write MR slices as DICOM files with pydicom, the way a scanner or a PACS export lays them out."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
# 16-bit route: stored = 4 * p + 1000, rescale intercept -1024, so the modality value is 4 p - 24;
# window centre 486.5 and width 1021 (DICOM's LINEAR function) map it back to exactly p.
STORED_SCALE, STORED_OFFSET, INTERCEPT, CENTRE, WIDTH = 4, 1000, -1024, 486.5, 1021


def write_mr(path: Path, gray: np.ndarray, *, study: str, series: str, instance: int, bits: int = 8,
             monochrome1: bool = False, frames: np.ndarray | None = None, orientation=AXIAL,
             image_type=("ORIGINAL", "PRIMARY", "AXIAL"), modality: str = "MR", series_number: int = 1,
             description: str = "AX T2", private: bool = False) -> Path:
    """gray: HxW uint8 (the pixels p); frames: NxHxW uint8 for a multi-frame object instead."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stack = gray[None] if frames is None else frames
    if monochrome1:
        stack = 255 - stack if bits == 8 else stack
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "EDGE-TEST-1", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = modality, series_number, description, instance
    ds.Manufacturer = "edge-medical tests"
    ds.ImageType = list(image_type)
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
    ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 90, 4000, 8
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0.0, 0.0, float(instance) * 5]
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 5
    ds.FrameOfReferenceUID = study + ".9"
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stack.shape[1:]
    if frames is not None:
        ds.NumberOfFrames = len(stack)
    if bits == 8:
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        data = stack.astype(np.uint8)
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        data = stack.astype(np.uint16) * STORED_SCALE + STORED_OFFSET
        if monochrome1:  # inverted display: the window maps 4095 - stored back to p after inversion
            data = (STORED_SCALE * 255 + 2 * STORED_OFFSET) - data
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, INTERCEPT, "US"
        ds.WindowCenter, ds.WindowWidth = CENTRE, WIDTH
    if private:
        block = ds.private_block(0x0029, "EDGE TEST PRIVATE", create=True)
        block.add_new(0x01, "LO", "private value")
        inner = Dataset()
        inner.add_new(0x00291001, "UN", b"\x00\x01\x02\x03")
        block.add_new(0x02, "SQ", [inner])
    ds.PixelData = data.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
