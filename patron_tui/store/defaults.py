"""Reference rows every new patron store starts with.

Districts rename and extend these; the store only needs a Union Site, a grade
table with a last grade, and the settings the rules read.
"""

from __future__ import annotations

UNION_SITE = {"code": "UNION", "name": "Union Site", "is_union": 1}

GRADES = [
    ("PK", "Pre-Kindergarten"), ("K", "Kindergarten"),
    *[(str(n), f"Grade {n}") for n in range(1, 13)],
    ("GRAD", "Graduated"),
]

POLICIES = [
    ("STUDENT", "Student", 365, 14),
    ("STAFF", "Staff", 730, 28),
    ("PATRON", "Patron", 365, 21),
]

SECURITY_GROUPS = [
    ("DISTADMIN", "District Administrator", 0),
    ("SITEADMIN", "Site Administrator", 1),
    ("LIBRARIAN", "Librarian", 2),
    ("TEACHER", "Teacher", 4),
    ("STUDENT", "Student", 5),
    ("PATRON", "Patron", 6),
]

PATRON_TYPES = [("Student", "Student"), ("Staff", "Staff"), ("Teacher", "Teacher"), ("Patron", "Patron")]
ACCESS_LEVELS = [("Student", "Student"), ("Staff", "Staff"), ("Teacher", "Teacher"), ("Guest", "Guest")]
PERSONAS = [("Student", "Student"), ("Teacher", "Teacher"), ("Administrator", "Administrator"), ("Parent", "Parent")]
STATUSES = [
    ("Active", "Active"), ("Inactive", "Inactive"), ("Restricted", "Restricted"),
    ("Suspended", "Suspended"), ("Transferred", "Transferred"),
]
MEDIA = [
    ("DB", "Digital talking book cartridge"), ("BR", "Braille"), ("LP", "Large print"),
    ("DL", "Digital download"), ("DV", "Described video"),
]
SUBJECTS = [
    ("MYS", "Mystery"), ("BIO", "Biography"), ("HIS", "History"), ("ROM", "Romance"),
    ("SCI", "Science"), ("WES", "Westerns"), ("SFF", "Science fiction and fantasy"),
    ("REL", "Religion"), ("CHI", "Children's"), ("POE", "Poetry"),
]

SETTINGS = {
    # month number (1-12) in which the statistical (school) year starts
    "statistical_year_start_month": "8",
    "account_expiration": "on",
    "centralized_catalog": "on",
    "require_district_id": "off",
    "term_grade": "Grade",
    "term_location": "Location",
    "term_location2": "2nd Location",
    # "on": the Inactivation/Deletion rules and Remove Patrons take a backup first (services/backup.py)
    "backup_before_destructive": "off",
    # days a run's change journal is kept: older runs are pruned and can no longer be undone
    "journal_retention_days": "400",
}

UNKNOWN_PATRON = {
    "barcode": None,
    "last_name": "Unknown Patron",
    "first_name": "",
    "site": "UNION",
    "status": "Inactive",
    "is_system": 1,
    "protected": 1,
}
